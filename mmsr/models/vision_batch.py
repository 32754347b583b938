"""The Qwen2.5-VL vision tower run as one batch when every image has the same patch grid.

What it is: ``image_features(visual, pixel_values, grid_thw)``, the tower's merged output per
image, computed with the tower's own modules and weights but one attention call per block
over a ``(images, heads, patches, head_dim)`` batch. transformers' tower packs all images into
one sequence and, without flash attention, calls attention once per image and window: on the
CPU with gradients that is ≈ 8 ms a call, so 64 pictures of the tiny preset took 1.8 s forward
where the arithmetic takes ≈ 0.1 s. Same grid and windows as wide as the image (the tiny
preset: ``window_size`` = image side) are required; otherwise, and for mixed grids, it falls
back to the tower's own forward, so the result is always the tower's (a test checks both).

What it is not: a different model. Nothing is re-parameterised; a checkpoint trained through
this path is an ordinary ``Qwen2_5_VLForConditionalGeneration``.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import Qwen2_5_VLForConditionalGeneration
from transformers.vision_utils import get_vision_position_ids, get_vision_window_index


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _one_window(visual: Any, grid: torch.Tensor) -> torch.Tensor | None:
    """The window order of one image when its window attention covers it whole, else None."""
    window_index, cu_window = get_vision_window_index(
        grid,
        spatial_merge_size=visual.spatial_merge_size,
        window_size=visual.window_size,
        patch_size=visual.patch_size,
    )
    patches = int(grid.prod())
    bounds = torch.unique_consecutive(torch.as_tensor(cu_window))
    if bounds.tolist() != [0, patches]:
        return None
    return torch.as_tensor(window_index)


def image_features(visual: Any, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
    """``(images, tokens, out_hidden)``: the merged vision tokens of each image, in the order
    the language model receives them (as ``visual(...).pooler_output`` split per image)."""
    grid_thw = torch.as_tensor(grid_thw)
    n = grid_thw.shape[0]
    unit = visual.spatial_merge_unit
    order = _one_window(visual, grid_thw[:1]) if bool((grid_thw == grid_thw[0]).all()) else None
    if order is None:
        merged = visual(pixel_values, grid_thw=grid_thw).pooler_output
        tokens = (grid_thw.prod(-1) // unit).tolist()
        return torch.nn.utils.rnn.pad_sequence(list(torch.split(merged, tokens)), batch_first=True)
    per = int(grid_thw[0].prod())
    x = visual.patch_embed(pixel_values)
    x = x.reshape(n, per // unit, unit, -1)[:, order].reshape(n, per, -1)
    position_ids = get_vision_position_ids(grid_thw[:1], visual.spatial_merge_size)
    rot = visual.rotary_pos_emb(position_ids).reshape(per // unit, unit, -1)[order]
    emb = torch.cat((rot.reshape(per, -1),) * 2, dim=-1).float()
    cos, sin = emb.cos(), emb.sin()
    for blk in visual.blocks:
        attn = blk.attn
        y = blk.norm1(x)
        qkv = attn.qkv(y).reshape(n, per, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        dtype = q.dtype
        q = (q.float() * cos + _rotate_half(q.float()) * sin).to(dtype)
        k = (k.float() * cos + _rotate_half(k.float()) * sin).to(dtype)
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=attn.scaling)
        x = x + attn.proj(out.transpose(1, 2).reshape(n, per, -1))
        x = x + blk.mlp(blk.norm2(x))
    merged = visual.merger(x.reshape(n * per, -1)).reshape(n, per // unit, -1)
    features: torch.Tensor = merged[:, torch.argsort(order)]
    return features


def model_inputs(
    model: Any,
    input_ids: torch.Tensor,
    pixel_values: torch.Tensor | None,
    image_grid_thw: torch.Tensor | None,
) -> dict[str, torch.Tensor]:
    """The keyword arguments of a forward pass over ``input_ids`` with these images: the token
    embeddings with the image pads replaced by ``image_features`` (what the model's own forward
    does, through the batched tower), or, when the tower cannot batch them or the pads do not
    match the images, or ``model`` is a wrapper (PEFT, LoRA's reference), the plain
    ``input_ids``/``pixel_values`` for the model to handle."""
    plain = {"input_ids": input_ids}
    if pixel_values is None or image_grid_thw is None:
        return plain
    plain |= {"pixel_values": pixel_values, "image_grid_thw": image_grid_thw}
    if not isinstance(model, Qwen2_5_VLForConditionalGeneration):
        return plain  # a wrapper (LoRA reference, PEFT): its own forward knows its modules
    grid = torch.as_tensor(image_grid_thw)
    visual = model.model.visual
    if not bool((grid == grid[0]).all()) or _one_window(visual, grid[:1]) is None:
        return plain
    pads = input_ids == model.config.image_token_id
    features = image_features(visual, pixel_values, grid)
    if int(pads.sum()) != features.shape[0] * features.shape[1]:
        return plain
    embeds = model.get_input_embeddings()(input_ids)
    flat = features.reshape(-1, features.shape[-1]).to(embeds.dtype)
    return {"inputs_embeds": embeds.masked_scatter(pads[..., None].expand_as(embeds), flat)}
