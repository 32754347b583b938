"""Who samples GRPO's rollouts (``rollout.backend``): the trained model, or a colocated vLLM.

``hf``: the ``HFPolicy`` over the trained model itself (nothing to synchronise). ``vllm``: a
``VLLMPolicy`` on an in-process ``vllm.LLM`` built from the run's model folder with random
(dummy) weights; the loop pushes the trainer's weights into it before the first rollout and
after every optimizer step (``trainer_weights``: LoRA adapters folded in), puts it to sleep
for each update and wakes it for the next rollouts (``Colocated``).

What it is not: the policies themselves (``mmsr.policy.hf``, ``mmsr.policy.vllm``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from mmsr.policy.local_model import ChatTurnEncoder, build_hf_policy
from mmsr.train import lora
from mmsr.train.grpo_config import GRPOConfig


class Colocated(Protocol):
    """A rollout engine that shares the GPU with the trainer and holds its own weights."""

    def sleep(self) -> None:
        """Free its GPU memory for the update."""

    def wake_up(self) -> None:
        """Take its memory back for the next rollouts."""

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy the trainer's ``(name, tensor)`` pairs into its own weights."""


@dataclass
class Rollout:
    """The policy the rollouts sample from, its turn encoder, and what follows the trainer."""

    policy: Any
    encoder: ChatTurnEncoder
    colocated: Colocated | None = None
    """Set when the policy holds its own copy of the weights (vLLM)."""


def trainer_weights(model: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """The trained model's weights under transformers' names, LoRA adapters folded in."""
    if lora.is_lora(model):
        yield from lora.merged_weights(model)
    else:
        yield from ((k, v.detach()) for k, v in model.state_dict().items())


def build_rollout(cfg: GRPOConfig, model: Any, parts: Any) -> Rollout:
    """The ``Rollout`` of ``cfg.rollout.backend`` for ``model`` (``parts``: a ``GRPOParts``)."""
    section = cfg.rollout
    if section.backend == "hf":
        policy, encoder = build_hf_policy(
            model,
            parts.tokenizer,
            parts.image_processor,
            temperature=section.temperature,
            max_batch=section.micro_batch_size,
        )
        return Rollout(policy, encoder)
    if parts.source is None:
        raise ValueError("rollout.backend vllm needs the model's folder (GRPOParts.source)")
    from mmsr.policy.local_model import build_vllm_policy

    vllm_policy, encoder = build_vllm_policy(
        parts.source,
        temperature=section.temperature,
        dtype="bfloat16",
        gpu_memory_utilization=section.vllm_memory,
        max_model_len=cfg.limits.max_total_tokens,
        max_images=1 + cfg.limits.max_image_searches * cfg.limits.image_k,
        sleep_mode=True,
        sleep_level=2,  # its weights are pushed again after every update anyway
        dummy_weights=True,  # the trainer's are pushed before the first rollout
        seed=cfg.run.seed,
    )
    return Rollout(vllm_policy, encoder, colocated=vllm_policy)
