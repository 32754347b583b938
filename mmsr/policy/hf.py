"""A token-level policy on a local Qwen2.5-VL model (transformers), with its own sampling loop.

Batched and left-padded: one prefill per turn and then a KV cache. Between the turns of one
session (``GenerationRequest.session``: one rollout engine run) each conversation's KV cache is
kept (``kv_reuse``, on by default), so a later turn prefills only the tokens after the cached
ones — the sampled end-of-turn token and the injected tool turn — not the whole conversation
and its images again (``mmsr.policy.hf_prefill``, ``mmsr.policy.kv_cache``). M-RoPE positions
are computed explicitly with the model's own ``get_rope_index`` for what is prefilled, continued
from the cached part, and continued as text positions while decoding, so they equal the
positions of the whole sequence computed after the fact (``mmsr.models.rope_position_ids``):
the training forward pass sees exactly what sampling saw. Each sample has its own seeded CPU
generator; vision and placeholder tokens are never sampled. Log-probs are recorded under the
sampling distribution (``temperature`` applied; greedy records the plain log-softmax). A
request's ``on_done`` is called as soon as its turn is complete, while other rows still decode
(the engine starts that turn's tool call then).

Every tensor is built on the model's device (``cpu`` or ``cuda``). On the CPU a sample's token
is drawn with ``torch.multinomial`` from its own generator; elsewhere by a batched Gumbel-max
(``gumbel_max``), whose per-row noise is drawn on the device from a seed that the row's CPU
generator supplies each step — one kernel per row instead of a (B, V) host-to-device copy, and
still one reproducible stream per sample. ``max_batch`` splits a call into chunks of that many
requests, which bounds the KV cache.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch

from mmsr.policy.base import Generation, GenerationRequest
from mmsr.policy.cpu_attention import gqa_attention
from mmsr.policy.hf_prefill import Prefill, build_prefill, image_key, shared_prompts
from mmsr.policy.kv_cache import PrefixStore, RowCache, RowKey

# force(request, ids sampled so far in this turn) -> the id to emit next, or None to sample.
# Constrained decoding: the forced id is scored (its log-prob recorded) like a sampled one.
ForceFn = Callable[[GenerationRequest, list[int]], int | None]


class VisionInputs(Protocol):
    """Turns images into the model's vision inputs: (pixel_values, image_grid_thw)."""

    def __call__(self, images: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass(frozen=True)
class SpecialIds:
    """The token ids the sampling loop must know."""

    pad: int
    end_of_turn: frozenset[int]
    """Ids that end a turn (e.g. <|im_end|>, <|endoftext|>); kept in the sampled ids."""
    suppressed: frozenset[int]
    """Ids never sampled (vision start/end, image and video placeholders)."""


# auto: multinomial on the CPU (its seeded results are pinned by tests), gumbel elsewhere;
# multinomial draws with CPU generators, so it needs the model on the CPU.
Sampler = Literal["auto", "multinomial", "gumbel"]


def gumbel_max(probs: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """(B,) ids, one draw per row of ``probs`` (B, V), on ``probs``' device.

    argmax(p / E) with E ~ Exp(1) is argmax(log p + Gumbel noise): a draw from p. Row b's noise
    comes from a device generator re-seeded from ``generators[b]`` (a CPU generator), so a row's
    draws depend on its own seed only, never on the batch it sits in.
    """
    noise_gen = torch.Generator(device=probs.device)
    noise = torch.empty_like(probs, dtype=torch.float32)  # (B, V)
    for b, g in enumerate(generators):
        noise_gen.manual_seed(int(torch.randint(0, 2**62, (), generator=g)))
        noise[b].exponential_(generator=noise_gen)
    return (probs.float() / noise.clamp_min_(1e-30)).argmax(dim=-1)


class HFPolicy:
    """Samples assistant turns from a local model; see the module docstring."""

    token_level = True

    def __init__(
        self,
        model: Any,
        vision: VisionInputs,
        decode: Callable[[list[int]], str],
        special: SpecialIds,
        *,
        temperature: float = 0.0,
        top_p: float = 1.0,
        force: ForceFn | None = None,
        max_batch: int = 0,
        sampler: Sampler = "auto",
        kv_reuse: bool = True,
    ) -> None:
        if not (0 <= temperature < math.inf and 0 < top_p <= 1):  # NaN fails too
            raise ValueError(f"bad sampling settings: temperature={temperature}, top_p={top_p}")
        if max_batch < 0:
            raise ValueError(f"max_batch must be >= 0 (0: no limit), got {max_batch}")
        if sampler not in ("auto", "multinomial", "gumbel"):
            raise ValueError(f"unknown sampler {sampler!r}")
        self.model, self.vision, self.decode, self.special = model, vision, decode, special
        self.temperature, self.top_p, self.force = temperature, top_p, force
        self.max_batch, self.sampler = max_batch, sampler
        self.kv_reuse = kv_reuse
        """Keep each conversation's KV cache between the turns of a session."""
        self._store = PrefixStore()
        self._last_logp: torch.Tensor | None = None  # (B, V) of the current step
        self._suppressed: torch.Tensor | None = None  # the suppressed ids, on the device

    @property
    def device(self) -> torch.device:
        """Where the model's weights, and so every input tensor, live."""
        return torch.device(next(self.model.parameters()).device)

    def end_session(self, session: Hashable) -> None:
        """Drop the KV caches kept for ``session`` (its rollouts are over)."""
        if self._store.session == session:
            self._store.start(None)

    @torch.no_grad()
    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        size = self.max_batch or max(len(requests), 1)
        sessions = {r.session for r in requests}
        session = sessions.pop() if self.kv_reuse and len(sessions) == 1 else None
        self._store.start(session)
        kept: dict[RowKey, RowCache] = {}
        out: list[Generation] = []
        with gqa_attention(self.model):
            for start in range(0, len(requests), size):
                chunk = requests[start : start + size]
                image_keys = [tuple(image_key(image) for image in r.images) for r in chunk]
                unique, index = shared_prompts(chunk, image_keys)
                hits = [
                    self._store.lookup(chunk[i].prompt_ids, image_keys[i])
                    if session is not None
                    else None
                    for i in unique
                ]
                steps = max((r.max_new_tokens for r in chunk), default=0)
                prefill = build_prefill(
                    self.model,
                    self.vision,
                    self.special.pad,
                    [chunk[i] for i in unique],
                    [image_keys[i] for i in unique],
                    hits,
                    max(steps, 0),
                )
                index = index.to(self.device)
                generations, sampled = self._sample(prefill, index, chunk)
                if session is not None:
                    kept.update(self._rows(prefill, index, chunk, image_keys, sampled))
                out += generations
        self._store.replace(kept)
        return out

    def _next_token(
        self, logits: torch.Tensor, generators: list[torch.Generator]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pick one id per row from ``logits`` (B, V); returns ids (B,) and their log-probs (B,)."""
        logits = logits.float()
        if self._suppressed is None or self._suppressed.device != logits.device:
            banned = sorted(self.special.suppressed)
            self._suppressed = torch.tensor(banned, dtype=torch.long, device=logits.device)
        logits[:, self._suppressed] = float("-inf")
        if self.temperature == 0:
            logp = torch.log_softmax(logits, dim=-1)
            self._last_logp = logp
            ids = logp.argmax(dim=-1)
            return ids, logp.gather(1, ids[:, None])[:, 0]
        logp = torch.log_softmax(logits / self.temperature, dim=-1)
        self._last_logp = logp
        probs = logp.exp()
        if self.top_p < 1:
            sorted_p, order = probs.sort(dim=-1, descending=True)
            drop = sorted_p.cumsum(-1) - sorted_p > self.top_p
            probs = probs.scatter(1, order, sorted_p.masked_fill(drop, 0.0))
        sampler = self.sampler
        if sampler == "auto":
            sampler = "multinomial" if probs.device.type == "cpu" else "gumbel"
        if sampler == "gumbel":
            ids = gumbel_max(probs, generators)
        else:
            ids = torch.stack(
                [torch.multinomial(probs[b], 1, generator=g)[0] for b, g in enumerate(generators)]
            )
        return ids, logp.gather(1, ids[:, None])[:, 0]

    def _sample(
        self, prefill: Prefill, index: torch.Tensor, requests: Sequence[GenerationRequest]
    ) -> tuple[list[Generation], list[list[int]]]:
        """Prefill the distinct rows once, expand to one row per request, then decode.

        Returns each request's ``Generation`` (``on_done`` is called as each completes, while
        the other rows still decode) and its sampled ids.
        """
        generators: list[torch.Generator] = []
        for r in requests:
            g = torch.Generator()
            g.manual_seed(r.seed if r.seed is not None else int(torch.randint(0, 2**62, ()).item()))
            generators.append(g)
        out = self.model(
            inputs_embeds=prefill.embeds,
            attention_mask=prefill.attention_mask,
            position_ids=prefill.position_ids,
            past_key_values=prefill.cache,
            use_cache=True,
            logits_to_keep=1,  # only the last position
        )
        cache = prefill.cache
        cache.select_rows(index)  # (unique, ...) -> (B, ...)
        logits = out.logits[index, -1, :]
        next_pos = prefill.next_position[index]  # (B,)
        attention_mask = prefill.attention_mask[index]
        results: list[tuple[list[int], list[float]]] = [([], []) for _ in requests]
        finished: list[Generation | None] = [None] * len(requests)

        def finish(b: int) -> None:
            gen = finished[b] = self._finish(*results[b], requests[b])
            report = requests[b].on_done
            if report is not None:
                report(gen)

        for b, r in enumerate(requests):
            if r.max_new_tokens <= 0:
                finish(b)
        for step in range(max(r.max_new_tokens for r in requests)):
            done = [g is not None for g in finished]
            if all(done):
                break
            ids, logps = self._next_token(logits, generators)
            if self.force is not None:
                ids, logps = self._apply_force(requests, results, ids, logps, done)
            for b, (token, lp) in enumerate(zip(ids.tolist(), logps.tolist(), strict=True)):
                if done[b]:
                    continue
                results[b][0].append(token)
                results[b][1].append(lp)
                limit = requests[b].max_new_tokens
                if token in self.special.end_of_turn or len(results[b][0]) >= limit:
                    done[b] = True
                    finish(b)
            if all(done):  # nothing left to feed
                break
            # a finished row feeds padding; its last sampled token is never fed (or cached)
            ids = torch.where(torch.tensor(done, device=ids.device), self.special.pad, ids)
            attention_mask = torch.cat(
                [attention_mask, torch.ones_like(attention_mask[:, :1])], dim=1
            )
            position_ids = (next_pos + step).view(1, -1, 1).expand(3, -1, 1)
            logits = self.model(
                input_ids=ids[:, None],
                attention_mask=attention_mask,
                position_ids=position_ids,
                past_key_values=cache,
                use_cache=True,
            ).logits[:, -1, :]
        generations = [g for g in finished if g is not None]  # each row ends by its limit
        assert len(generations) == len(requests)
        return generations, [ids for ids, _ in results]

    def _rows(
        self,
        prefill: Prefill,
        index: torch.Tensor,
        requests: Sequence[GenerationRequest],
        image_keys: Sequence[tuple[Hashable, ...]],
        sampled: Sequence[list[int]],
    ) -> dict[RowKey, RowCache]:
        """Each request's conversation after its turn — its prompt and the sampled ids that
        were fed (all but the last) — and where their keys/values are in the batch cache."""
        wc, wn = prefill.cache_width, prefill.embeds.shape[1]
        next_position = prefill.next_position[index].tolist()
        rows: dict[RowKey, RowCache] = {}
        for b, (r, ids) in enumerate(zip(requests, sampled, strict=True)):
            fed = max(len(ids) - 1, 0)
            key = (*r.prompt_ids, *ids[:fed])
            cached = prefill.cached[int(index[b])]
            new = len(r.prompt_ids) - cached
            spans = ((wc - cached, wc), (wc + wn - new, wc + wn + fed))
            rows.setdefault(  # a group's identical rows: the first one
                (key, image_keys[b]),
                RowCache(
                    ids=key,
                    image_keys=image_keys[b],
                    next_position=int(next_position[b]) + fed,
                    source=prefill.cache,
                    row=b,
                    spans=tuple((s, e) for s, e in spans if e > s),
                ),
            )
        return rows

    def _apply_force(
        self,
        requests: Sequence[GenerationRequest],
        results: list[tuple[list[int], list[float]]],
        ids: torch.Tensor,
        logps: torch.Tensor,
        done: list[bool],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Replace sampled ids by forced ones, with the forced ids' log-probs."""
        assert self.force is not None and self._last_logp is not None
        ids, logps = ids.clone(), logps.clone()
        for b, request in enumerate(requests):
            forced = None if done[b] else self.force(request, results[b][0])
            if forced is not None:
                ids[b] = forced
                logps[b] = self._last_logp[b, forced]
        return ids, logps

    def _finish(
        self, ids: list[int], logprobs: list[float], request: GenerationRequest
    ) -> Generation:
        closed = bool(ids) and ids[-1] in self.special.end_of_turn
        text_ids = ids[:-1] if closed else ids
        return Generation(
            self.decode(text_ids), tuple(ids), tuple(logprobs), "stop" if closed else "length"
        )
