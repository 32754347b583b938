"""3-D rotary positions (M-RoPE) of Qwen2.5-VL sequences, computed by the model's own code.

Why this module exists: in ``transformers`` 5.10 a Qwen2.5-VL forward pass (and ``generate``)
computes 3-D positions only when it is also given ``mm_token_type_ids`` (0 text, 1 image,
2 video per token, normally made by the stock processor). Without them it silently falls back
to 1-D positions on every axis — the training bug of the original release. Our
encoder builds ids itself, so it must build these too; ``rope_position_ids`` then gives
positions to pass explicitly as ``position_ids`` (shape (3, B, T)), which is what training and
the log-prob check of the rollout engine should do.

What it is not: the rotary maths (the model's), or generation.
"""

from __future__ import annotations

import torch
from transformers import Qwen2_5_VLForConditionalGeneration


def mm_token_type_ids(
    input_ids: torch.Tensor, model: Qwen2_5_VLForConditionalGeneration
) -> torch.Tensor:
    """(B, T) int tensor: 1 on image-pad tokens, 2 on video-pad tokens, 0 elsewhere."""
    config = model.config
    types = torch.zeros_like(input_ids, dtype=torch.int32)
    types[input_ids == config.image_token_id] = 1
    types[input_ids == config.video_token_id] = 2
    return types


def rope_position_ids(
    model: Qwen2_5_VLForConditionalGeneration,
    input_ids: torch.Tensor,
    image_grid_thw: torch.Tensor | None,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """(3, B, T) positions (time, height, width) of ``input_ids`` (B, T) with its images.

    ``image_grid_thw`` (n_images, 3) lists the images of the whole batch in order; padded
    positions (``attention_mask`` 0, e.g. left padding) get position 0.
    """
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must be (B, T), got shape {tuple(input_ids.shape)}")
    positions: torch.Tensor
    positions, _ = model.model.get_rope_index(
        input_ids,
        mm_token_type_ids=mm_token_type_ids(input_ids, model),
        image_grid_thw=image_grid_thw,
        attention_mask=attention_mask,
    )
    return positions
