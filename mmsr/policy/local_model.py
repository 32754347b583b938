"""Wiring a local model into the rollout: the hf or vLLM policy plus the encoder of injected turns.

``build_hf_policy`` takes a model, its tokenizer and image processor (from ``mmsr.models``) and
returns the ``HFPolicy`` and the ``TurnEncoder`` the rollout engine needs for token-exact
trajectories; ``load_hf_policy`` does the same from a saved model folder (ours, or a real
Qwen2.5-VL checkpoint) on a device, in a dtype. ``build_vllm_policy`` starts a ``vllm.LLM`` on
a model folder (only that folder's files are read: nothing is downloaded) and returns the
``VLLMPolicy`` with the same turn encoder.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mmsr.models.chat_encoder import ChatEncoder, stack_images
from mmsr.models.image_processor import ImageProcessor
from mmsr.models.io import load_model, load_tokenizer_and_processor
from mmsr.models.tokenizer import (
    DEFAULT_SYSTEM_PROMPT,
    ENDOFTEXT,
    IM_END,
    IMAGE_PAD,
    suppressed_token_ids,
    text_decoder,
    token_id,
)
from mmsr.policy.hf import ForceFn, HFPolicy, SpecialIds
from mmsr.policy.vllm import VLLMPolicy, import_vllm
from mmsr.types import Turn

logger = logging.getLogger(__name__)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ChatTurnEncoder:
    """``TurnEncoder`` over a ``ChatEncoder``: user turns as the chat template lays them out."""

    def __init__(self, encoder: ChatEncoder, forbidden_ids: frozenset[int]) -> None:
        self.encoder = encoder
        self.forbidden_ids = forbidden_ids

    def user_turn_ids(self, turn: Turn, *, first: bool) -> list[int]:
        segment = self.encoder.encode_turn(turn, first=first, add_generation_prompt=True)
        ids = list(segment.input_ids)
        # a later turn starts with the separator that follows the sampled <|im_end|>
        return ids if first else [*self.encoder.separator_ids, *ids]


class _Vision:
    def __init__(self, processor: ImageProcessor) -> None:
        self.processor = processor

    def __call__(self, images: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        pixel_values, grid = stack_images([self.processor(image) for image in images])
        assert pixel_values is not None and grid is not None
        return pixel_values, grid


def build_hf_policy(
    model: Any,
    tokenizer: Any,
    image_processor: ImageProcessor,
    *,
    temperature: float = 0.0,
    top_p: float = 1.0,
    force: ForceFn | None = None,
    system_prompt: str = DEFAULT_SYSTEM_PROMPT,
    max_batch: int = 0,
) -> tuple[HFPolicy, ChatTurnEncoder]:
    """The policy and the turn encoder of one local model (greedy by default); ``max_batch``
    requests per forward pass at most (0: all), which bounds the KV cache."""
    suppressed = frozenset(suppressed_token_ids(tokenizer))
    special = SpecialIds(
        pad=token_id(tokenizer, ENDOFTEXT),
        end_of_turn=frozenset({token_id(tokenizer, IM_END), token_id(tokenizer, ENDOFTEXT)}),
        suppressed=suppressed,
    )

    decode = text_decoder(tokenizer)
    policy = HFPolicy(
        model,
        _Vision(image_processor),
        decode,
        special,
        temperature=temperature,
        top_p=top_p,
        force=force,
        max_batch=max_batch,
    )
    encoder = ChatEncoder(tokenizer, image_processor, system_prompt=system_prompt)
    return policy, ChatTurnEncoder(encoder, suppressed)


def load_hf_policy(
    folder: str | Path, *, device: str = "cpu", dtype: str = "float32", **kwargs: Any
) -> tuple[HFPolicy, ChatTurnEncoder]:
    """``build_hf_policy`` for a model folder (``mmsr.models.save_pretrained``'s, or a real
    Qwen2.5-VL checkpoint), its weights on ``device`` in ``dtype`` (a key of ``DTYPES``)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but CUDA is not available here")
    model, tokenizer, image_processor = load_model(folder, dtype=DTYPES[dtype], device=device)
    return build_hf_policy(model, tokenizer, image_processor, **kwargs)


def build_vllm_policy(
    folder: str | Path,
    *,
    temperature: float = 0.0,
    top_p: float = 1.0,
    dtype: str = "bfloat16",
    gpu_memory_utilization: float = 0.9,
    max_model_len: int | None = None,
    max_images: int = 8,
    sleep_mode: bool = False,
    sleep_level: int = 1,
    dummy_weights: bool = False,
    seed: int = 0,
    system_prompt: str = DEFAULT_SYSTEM_PROMPT,
) -> tuple[VLLMPolicy, ChatTurnEncoder]:
    """A ``VLLMPolicy`` on a ``vllm.LLM`` of ``folder``, and the turn encoder of its tokenizer.

    The engine runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``: weights are pushed
    into it by reference), offline (``HF_HUB_OFFLINE=1``), with prefix caching, the sampled
    distribution's log-probs and ``sleep_mode`` for colocation with a trainer.
    ``dummy_weights`` starts it with random weights (the trainer pushes its own before the
    first rollout): the folder then needs only its config, tokenizer and processor files.
    """
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    vllm = import_vllm()
    tokenizer, image_processor = load_tokenizer_and_processor(folder)
    llm = vllm.LLM(
        model=str(folder),
        tokenizer=str(folder),
        dtype=dtype,
        seed=seed,
        gpu_memory_utilization=gpu_memory_utilization,
        max_model_len=max_model_len,
        enable_prefix_caching=True,
        enable_sleep_mode=sleep_mode,
        limit_mm_per_prompt={"image": max_images, "video": 0},  # no video: less to profile
        logprobs_mode="processed_logprobs",
        load_format="dummy" if dummy_weights else "auto",
    )
    policy = VLLMPolicy(
        llm,
        vllm.SamplingParams,
        text_decoder(tokenizer),
        end_of_turn=frozenset({token_id(tokenizer, IM_END), token_id(tokenizer, ENDOFTEXT)}),
        suppressed=frozenset(suppressed_token_ids(tokenizer)),
        image_pad=token_id(tokenizer, IMAGE_PAD),
        temperature=temperature,
        top_p=top_p,
        sleep_level=sleep_level,
    )
    encoder = ChatEncoder(tokenizer, image_processor, system_prompt=system_prompt)
    logger.info("vLLM engine on %s (%s, sleep mode %s)", folder, dtype, sleep_mode)
    return policy, ChatTurnEncoder(encoder, policy.suppressed)
