"""The first forward pass of a turn in the hf policy: what is fed, where it sits, its positions.

A batch row is one distinct conversation. A row whose earlier turns are cached (a
``RowCache`` hit) feeds only the tokens after them; a row without feeds its whole prompt.
Layout, one row per line (``c`` cached, ``n`` new, ``.`` masked)::

    cache part (width Wc)   new part (width Wn)
    . . c c c c c c c c  |  . . . n n n n
    c c c c c c c c c c  |  . n n n n n n
    . . . . . . . . . .  |  n n n n n n n      (no hit: the whole prompt is new)

Both parts are right-aligned, so every row's last position holds its last prompt token; a
masked gap between the parts is only padding. The M-RoPE positions of the new part are
``get_rope_index``'s positions of those tokens alone, shifted by where the cached part ended
(``RowCache.next_position``): positions only ever continue from the largest one so far, so
this equals the positions of the whole sequence (``mmsr.models.rope_position_ids``).

Images are turned into vision features here, once per distinct image of the batch (a group's
question image, the thumbnails a group's searches share), and scattered into the input
embeddings in placeholder order; images in the cached part are not encoded again.

What it is not: sampling (``mmsr.policy.hf``) or the cache itself (``mmsr.policy.kv_cache``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from mmsr.models.positions import rope_position_ids
from mmsr.policy.base import GenerationRequest
from mmsr.policy.kv_cache import GrowingCache, RowCache, batch_cache

VisionFn = Callable[[Sequence[Any]], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class Prefill:
    """The inputs of a turn's first forward pass over ``U`` distinct rows."""

    embeds: torch.Tensor
    """(U, Wn, hidden) input embeddings of the new part, image features in place."""
    attention_mask: torch.Tensor
    """(U, Wc + Wn): 1 on each row's cached and new tokens."""
    position_ids: torch.Tensor
    """(3, U, Wn) M-RoPE positions of the new part (0 where masked)."""
    cache: GrowingCache
    """Keys/values of the cached part, with room for the new part and every decoding step."""
    next_position: torch.Tensor
    """(U,) the position of each row's first sampled token."""
    cached: list[int]
    """Per row: how many of its prompt tokens came from the cache."""
    cache_width: int
    """Wc: the positions before the new part."""


def image_key(image: Any) -> Hashable:
    """Content key of an image (PIL images by their pixels; anything else by identity)."""
    tobytes = getattr(image, "tobytes", None)
    if tobytes is None:
        return ("id", id(image))
    digest = hashlib.blake2b(tobytes(), digest_size=16).digest()
    return (getattr(image, "mode", ""), getattr(image, "size", ()), digest)


def shared_prompts(
    requests: Sequence[GenerationRequest], image_keys: Sequence[tuple[Hashable, ...]]
) -> tuple[list[int], torch.Tensor]:
    """The distinct (prompt ids, images) of a batch — as indices of their first request — and,
    per request, its row among them.

    The G rollouts of one GRPO group share their first turn: prefilling it once instead of G
    times is most of the prefill cost.
    """
    rows: dict[Hashable, int] = {}
    unique: list[int] = []
    index = []
    for i, (r, keys) in enumerate(zip(requests, image_keys, strict=True)):
        key = (r.prompt_ids, keys)
        if key not in rows:
            rows[key] = len(unique)
            unique.append(i)
        index.append(rows[key])
    return unique, torch.tensor(index, dtype=torch.long)


def build_prefill(
    model: Any,
    vision: VisionFn,
    pad: int,
    requests: Sequence[GenerationRequest],
    image_keys: Sequence[tuple[Hashable, ...]],
    hits: Sequence[RowCache | None],
    steps: int,
) -> Prefill:
    """The ``Prefill`` of distinct ``requests``; ``hits[u]``: row u's cached turns, if any;
    ``steps``: decoding steps to leave room for in the cache."""
    device = next(model.parameters()).device
    cached = [len(h.ids) if h is not None else 0 for h in hits]
    new = [r.prompt_ids[c:] for r, c in zip(requests, cached, strict=True)]
    if not all(new):
        raise ValueError("every request needs at least one prompt token past its cached turns")
    n_rows, wc, wn = len(requests), max(cached), max(len(ids) for ids in new)
    input_ids = torch.full((n_rows, wn), pad, dtype=torch.long)
    new_mask = torch.zeros((n_rows, wn), dtype=torch.long)
    cache_mask = torch.zeros((n_rows, wc), dtype=torch.long)
    images: list[tuple[Any, Hashable]] = []
    for row, (r, ids, c, hit) in enumerate(zip(requests, new, cached, hits, strict=True)):
        input_ids[row, wn - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        new_mask[row, wn - len(ids) :] = 1
        cache_mask[row, wc - c :] = 1
        first = len(hit.image_keys) if hit is not None else 0
        images += zip(r.images[first:], image_keys[row][first:], strict=True)
    input_ids, new_mask = input_ids.to(device), new_mask.to(device)
    embeds, grid = _embed(model, vision, input_ids, images)
    positions = rope_position_ids(model, input_ids, grid, new_mask)  # (3, U, Wn)
    offsets = [h.next_position if h is not None else 0 for h in hits]
    positions = positions + torch.tensor(offsets, device=device).view(1, -1, 1) * new_mask
    n_layers = model.config.get_text_config().num_hidden_layers
    cache = batch_cache(hits, n_layers, wc, wc + wn + steps) or GrowingCache(
        n_layers, wc + wn + steps
    )
    return Prefill(
        embeds=embeds,
        attention_mask=torch.cat([cache_mask.to(device), new_mask], dim=1),
        position_ids=positions,
        cache=cache,
        next_position=positions.amax(dim=(0, 2)) + 1,
        cached=cached,
        cache_width=wc,
    )


def _embed(
    model: Any, vision: VisionFn, input_ids: torch.Tensor, images: list[tuple[Any, Hashable]]
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Input embeddings (U, Wn, hidden) with each image's features at its placeholders, and
    the (n_images, 3) grids in placeholder order; each distinct image is encoded once."""
    embeds: torch.Tensor = model.get_input_embeddings()(input_ids)
    if not images:
        return embeds, None
    distinct: dict[Hashable, int] = {}
    order = [distinct.setdefault(key, len(distinct)) for _, key in images]
    first: dict[int, Any] = {}
    for (image, _), j in zip(images, order, strict=True):
        first.setdefault(j, image)
    pixel_values, grid = vision([first[j] for j in range(len(distinct))])
    pixel_values, grid = pixel_values.to(embeds.device), grid.to(embeds.device)
    features = model.get_image_features(pixel_values=pixel_values, image_grid_thw=grid)
    per_image = features.pooler_output  # one (tokens_i, hidden) tensor per distinct image
    feats = torch.cat([per_image[j] for j in order]).to(embeds.dtype)
    slots = input_ids == model.config.image_token_id
    if int(slots.sum()) * embeds.shape[-1] != feats.numel():
        raise ValueError(
            f"{int(slots.sum())} image placeholders for {len(images)} images"
            f" ({feats.shape[0]} visual tokens)"
        )
    embeds = embeds.masked_scatter(slots[..., None].expand_as(embeds), feats)
    return embeds, grid[torch.tensor(order, device=grid.device)]
