"""Wiring a local model into the rollout: the hf policy plus the encoder of injected turns.

``build_hf_policy`` takes a model, its tokenizer and image processor (from ``mmsr.models``) and
returns the ``HFPolicy`` and the ``TurnEncoder`` the rollout engine needs for token-exact
trajectories; ``load_hf_policy`` does the same from a saved model folder (ours, or a real
Qwen2.5-VL checkpoint).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mmsr.models.chat import ChatEncoder, stack_images
from mmsr.models.image_processor import ImageProcessor
from mmsr.models.io import load_model
from mmsr.models.tokenizer import (
    DEFAULT_SYSTEM_PROMPT,
    ENDOFTEXT,
    IM_END,
    suppressed_token_ids,
    token_id,
)
from mmsr.policy.hf import ForceFn, HFPolicy, SpecialIds
from mmsr.types import Turn


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

    def decode(ids: list[int]) -> str:
        return str(tokenizer.decode(ids, skip_special_tokens=False))

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


def load_hf_policy(folder: str | Path, **kwargs: Any) -> tuple[HFPolicy, ChatTurnEncoder]:
    """``build_hf_policy`` for a model folder saved by ``mmsr.models.save_pretrained``."""
    model, tokenizer, image_processor = load_model(folder)
    return build_hf_policy(model, tokenizer, image_processor, **kwargs)
