"""The hf policy's KV cache: preallocated per batch, and kept per conversation between turns.

``GrowingCache`` is a ``transformers`` cache whose layers write new keys/values into tensors
allocated once for the whole turn (prompt + every decoding step) instead of concatenating
the whole cache at every step; what attention reads is a view of the filled part.

``PrefixStore`` keeps, after a turn, where each conversation's keys/values are (``RowCache``:
its real tokens, not the padding) under its token ids and images, for one *session* (one rollout
engine run, during which the weights do not change). The next turn of that conversation
starts with those ids, so only the tokens after them — the sampled end-of-turn token and the
injected tool turn — are prefilled. A ``RowCache`` points into the batch cache of the turn
that made it; ``batch_cache`` copies the rows a new batch continues into one cache,
right-aligned, so rows that end are never copied at all.

What it is not: sampling, positions or inputs (``mmsr.policy.hf``); no cache survives a
session, since the keys/values of old weights would be wrong after an optimizer step.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers.cache_utils import Cache, DynamicLayer

KV = tuple[torch.Tensor, torch.Tensor]


class GrowingLayer(DynamicLayer):  # type: ignore[no-untyped-call]
    """One layer's keys/values in tensors of ``capacity`` positions, filled left to right."""

    def __init__(self, capacity: int, prefix: KV | None = None) -> None:
        super().__init__()
        self.capacity = capacity
        self._k: torch.Tensor | None = None  # (B, H, capacity, D)
        self._v: torch.Tensor | None = None
        self._n = 0
        if prefix is not None:
            self._allocate(prefix[0])
            self._write(*prefix)

    def _allocate(self, like: torch.Tensor) -> None:
        b, h, n, d = like.shape
        shape = (b, h, max(self.capacity, n), d)
        # zeros, not empty: masked positions get weight 0, and 0 * garbage may be NaN
        self._k = torch.zeros(shape, dtype=like.dtype, device=like.device)
        self._v = torch.zeros_like(self._k)
        self.dtype, self.device, self.is_initialized = like.dtype, like.device, True

    def _write(self, keys: torch.Tensor, values: torch.Tensor) -> KV:
        assert self._k is not None and self._v is not None
        end = self._n + keys.shape[-2]
        if end > self._k.shape[-2]:  # past the planned capacity: grow (rare)
            more = end - self._k.shape[-2] + self.capacity // 2
            pad = self._k.new_zeros((*self._k.shape[:2], more, self._k.shape[-1]))
            self._k, self._v = torch.cat([self._k, pad], -2), torch.cat([self._v, pad], -2)
        self._k[:, :, self._n : end] = keys
        self._v[:, :, self._n : end] = values
        self._n = end
        return self._views()

    def _views(self) -> KV:
        assert self._k is not None and self._v is not None
        self.keys, self.values = self._k[:, :, : self._n], self._v[:, :, : self._n]
        return self.keys, self.values

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> KV:
        if self._k is None:
            self._allocate(key_states)
        return self._write(key_states, value_states)

    def get_seq_length(self) -> int:
        return self._n

    def select_rows(self, index: torch.Tensor) -> None:
        """Keep batch rows ``index`` (in that order, repeats allowed)."""
        if self._k is not None and self._v is not None:
            self._k = self._k.index_select(0, index.to(self._k.device))
            self._v = self._v.index_select(0, index.to(self._v.device))
            self._views()

    def reorder_cache(self, beam_idx: torch.Tensor) -> None:
        self.select_rows(beam_idx)


class GrowingCache(Cache):
    """A cache of ``GrowingLayer`` s; ``prefix`` gives each layer's first keys/values."""

    def __init__(self, n_layers: int, capacity: int, prefix: Sequence[KV] | None = None) -> None:
        self.growing = [
            GrowingLayer(capacity, prefix[i] if prefix else None) for i in range(n_layers)
        ]
        layers: list[Any] = list(self.growing)
        super().__init__(layers=layers)

    def select_rows(self, index: torch.Tensor) -> None:
        """Keep batch rows ``index`` of every layer (``(unique, ...)`` -> ``(B, ...)``)."""
        for layer in self.growing:
            layer.select_rows(index)

    def layer_kv(self, i: int) -> KV:
        """Layer ``i``'s filled keys and values, (B, H, T, D) each."""
        return self.growing[i]._views()


@dataclass(frozen=True)
class RowCache:
    """Where one conversation's keys/values are, after a turn: a row of that turn's cache."""

    ids: tuple[int, ...]
    """The token ids they cover (the prompt and the fed part of the sampled turn)."""
    image_keys: tuple[Hashable, ...]
    """Content keys of the images among those ids, in placeholder order."""
    next_position: int
    """The M-RoPE position of the token that follows ``ids``."""
    source: GrowingCache
    """The batch cache of the turn that computed them (shared by the rows of that batch)."""
    row: int
    """This conversation's row in ``source``."""
    spans: tuple[tuple[int, int], ...]
    """The positions of ``ids`` in that row, as half-open ranges in order (the rest of the row
    is padding)."""


RowKey = tuple[tuple[int, ...], tuple[Hashable, ...]]
"""A conversation: its token ids and its images' content keys."""


class PrefixStore:
    """The ``RowCache`` s of the latest turn of one session, looked up by prompt prefix."""

    def __init__(self) -> None:
        self.session: Hashable | None = None
        self._rows: dict[tuple[int, ...], list[RowCache]] = {}  # by ids: the same ids may
        # come with different images (two questions worded alike)

    def __len__(self) -> int:
        return sum(len(rows) for rows in self._rows.values())

    def start(self, session: Hashable | None) -> None:
        """Forget every row unless ``session`` is the one they belong to."""
        if session is None or session != self.session:
            self._rows = {}
        self.session = session

    def replace(self, rows: dict[RowKey, RowCache]) -> None:
        """Keep only ``rows`` (the turn just sampled): older turns are never continued."""
        self._rows = {}
        for (ids, _), row in rows.items():
            self._rows.setdefault(ids, []).append(row)

    def lookup(self, prompt: tuple[int, ...], image_keys: tuple[Hashable, ...]) -> RowCache | None:
        """The longest stored row that is a strict prefix of ``prompt`` with the same images."""
        for length in sorted({len(k) for k in self._rows}, reverse=True):
            if length >= len(prompt):
                continue
            for row in self._rows.get(prompt[:length], ()):
                if image_keys[: len(row.image_keys)] == row.image_keys:
                    return row
        return None


def batch_cache(
    hits: Sequence[RowCache | None], n_layers: int, width: int, capacity: int
) -> GrowingCache | None:
    """One cache of ``width`` positions for the rows of a batch, each hit's keys/values copied
    in right-aligned (rows without a hit stay zero: their positions are masked); None when no
    row has a hit. Only the rows that are continued are ever copied out of an older batch."""
    present = [h for h in hits if h is not None]
    if not present or width == 0:
        return None
    prefix = []
    for i in range(n_layers):
        k0, _ = present[0].source.layer_kv(i)
        shape = (len(hits), k0.shape[1], width, k0.shape[-1])
        keys, values = k0.new_zeros(shape), k0.new_zeros(shape)
        for row, hit in enumerate(hits):
            if hit is None:
                continue
            src_k, src_v = hit.source.layer_kv(i)
            at = width - len(hit.ids)
            for start, end in hit.spans:
                keys[row, :, at : at + end - start] = src_k[hit.row, :, start:end]
                values[row, :, at : at + end - start] = src_v[hit.row, :, start:end]
                at += end - start
        prefix.append((keys, values))
    return GrowingCache(n_layers, capacity, prefix)
