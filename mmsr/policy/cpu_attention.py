"""Grouped-query attention for sampling on the CPU, without copying the KV cache every step.

``transformers``' ``sdpa`` attention repeats the key/value heads of a grouped-query model
(``repeat_kv``: a full copy of the cache) whenever an attention mask is given, because CUDA's
fused kernels then fall back to the slow path. On the CPU, torch's SDPA takes
``enable_gqa=True`` with a mask at full speed; with the left padding of a batch there is
always a mask, and the copy was most of a decoding step's time (measured on 2 busy cores, one
layer, 64 rows × 650 positions: 55 ms with the copy, 5.5 ms without; with the preallocated
cache of ``mmsr.policy.kv_cache`` a whole step of the tiny model went from 0.14 s to 0.04 s).
``gqa_attention(model)`` switches a model's language model to it for a ``with`` block; the
vision tower is left alone.

What it is not: a different attention: the same masked softmax attention, the same numbers up
to float rounding. Not used off the CPU.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

NAME = "mmsr_cpu_gqa_sdpa"


def _gqa_sdpa(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """SDPA on (B, H, T, D) queries and (B, H_kv, T', D) keys/values, heads grouped in place."""
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    out = torch.nn.functional.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=attention_mask,
        dropout_p=dropout,
        scale=scaling,
        is_causal=bool(query.shape[2] > 1 and attention_mask is None and causal),
        enable_gqa=key.shape[1] != query.shape[1],
    )
    return out.transpose(1, 2).contiguous(), None


def _register() -> None:
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if NAME not in ALL_ATTENTION_FUNCTIONS:
        ALL_ATTENTION_FUNCTIONS.register(NAME, _gqa_sdpa)
        ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)  # the masks sdpa gets


@contextmanager
def gqa_attention(model: Any) -> Iterator[None]:
    """Within the block, ``model``'s language model attends with ``_gqa_sdpa`` — only when the
    model is on the CPU and uses ``sdpa``; otherwise nothing changes."""
    config = model.config.get_text_config()
    on_cpu = next(model.parameters()).device.type == "cpu"
    if not on_cpu or config._attn_implementation != "sdpa":
        yield
        return
    _register()
    config._attn_implementation = NAME
    try:
        yield
    finally:
        config._attn_implementation = "sdpa"
