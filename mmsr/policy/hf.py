"""A token-level policy on a local Qwen2.5-VL model (transformers), with its own sampling loop.

Batched and left-padded, one prefill over each conversation so far (all its images) and then a
KV cache. M-RoPE positions are computed explicitly with the model's own ``get_rope_index`` for
the prefill and continued as text positions while decoding, so they equal the positions of the
whole sequence computed after the fact (``mmsr.models.rope_position_ids``): the training
forward pass sees exactly what sampling saw. Each sample has its own seeded CPU generator;
vision and placeholder tokens are never sampled. Log-probs are recorded under the sampling
distribution (``temperature`` applied; greedy records the plain log-softmax).

Every tensor is built on the model's device (``cpu`` or ``cuda``). On the CPU a sample's token
is drawn with ``torch.multinomial`` from its own generator; elsewhere by a batched Gumbel-max
(``gumbel_max``), whose per-row noise is drawn on the device from a seed that the row's CPU
generator supplies each step — one kernel per row instead of a (B, V) host-to-device copy, and
still one reproducible stream per sample. ``max_batch`` splits a call into chunks of that many
requests, which bounds the KV cache.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch

from mmsr.models.positions import rope_position_ids
from mmsr.policy.base import Generation, GenerationRequest

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
    ) -> None:
        if temperature < 0 or not 0 < top_p <= 1:
            raise ValueError(f"bad sampling settings: temperature={temperature}, top_p={top_p}")
        if max_batch < 0:
            raise ValueError(f"max_batch must be >= 0 (0: no limit), got {max_batch}")
        if sampler not in ("auto", "multinomial", "gumbel"):
            raise ValueError(f"unknown sampler {sampler!r}")
        self.model, self.vision, self.decode, self.special = model, vision, decode, special
        self.temperature, self.top_p, self.force = temperature, top_p, force
        self.max_batch, self.sampler = max_batch, sampler
        self._last_logp: torch.Tensor | None = None  # (B, V) of the current step
        self._suppressed: torch.Tensor | None = None  # the suppressed ids, on the device

    @property
    def device(self) -> torch.device:
        """Where the model's weights, and so every input tensor, live."""
        return torch.device(next(self.model.parameters()).device)

    @torch.no_grad()
    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        size = self.max_batch or max(len(requests), 1)
        out: list[Generation] = []
        for start in range(0, len(requests), size):
            chunk = requests[start : start + size]
            unique, index = _shared_prompts(chunk)
            batch = self._prefill_inputs(unique)
            sampled = self._sample(batch, index.to(self.device), chunk)
            out += [self._finish(ids, lps, r) for (ids, lps), r in zip(sampled, chunk, strict=True)]
        return out

    def _prefill_inputs(self, requests: Sequence[GenerationRequest]) -> dict[str, torch.Tensor]:
        width = max(len(r.prompt_ids) for r in requests)
        input_ids = torch.full((len(requests), width), self.special.pad, dtype=torch.long)
        attention_mask = torch.zeros((len(requests), width), dtype=torch.long)
        for row, r in enumerate(requests):  # left padding
            input_ids[row, width - len(r.prompt_ids) :] = torch.tensor(
                r.prompt_ids, dtype=torch.long
            )
            attention_mask[row, width - len(r.prompt_ids) :] = 1
        images = [image for r in requests for image in r.images]
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if images:
            inputs["pixel_values"], inputs["image_grid_thw"] = self.vision(images)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        inputs["position_ids"] = rope_position_ids(
            self.model, input_ids, inputs.get("image_grid_thw"), attention_mask
        )
        return inputs

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
        self,
        inputs: dict[str, torch.Tensor],
        index: torch.Tensor,
        requests: Sequence[GenerationRequest],
    ) -> list[tuple[list[int], list[float]]]:
        """Prefill the distinct prompts once, expand to one row per request, then decode."""
        generators: list[torch.Generator] = []
        for r in requests:
            g = torch.Generator()
            g.manual_seed(r.seed if r.seed is not None else int(torch.randint(0, 2**62, ()).item()))
            generators.append(g)
        out = self.model(**inputs, use_cache=True, logits_to_keep=1)  # only the last position
        out.past_key_values.reorder_cache(index)  # (unique, ...) -> (B, ...)
        out.logits = out.logits[index]
        next_pos = (inputs["position_ids"].amax(dim=(0, 2)) + 1)[index]  # (B,)
        attention_mask = inputs["attention_mask"][index]
        results: list[tuple[list[int], list[float]]] = [([], []) for _ in requests]
        done = [r.max_new_tokens <= 0 for r in requests]
        for step in range(max(r.max_new_tokens for r in requests)):
            if all(done):
                break
            ids, logps = self._next_token(out.logits[:, -1, :], generators)
            if self.force is not None:
                ids, logps = self._apply_force(requests, results, ids, logps, done)
            for b, (token, lp) in enumerate(zip(ids.tolist(), logps.tolist(), strict=True)):
                if done[b]:
                    continue
                results[b][0].append(token)
                results[b][1].append(lp)
                limit = requests[b].max_new_tokens
                done[b] = token in self.special.end_of_turn or len(results[b][0]) >= limit
            ids = torch.where(torch.tensor(done, device=ids.device), self.special.pad, ids)
            attention_mask = torch.cat(
                [attention_mask, torch.ones_like(attention_mask[:, :1])], dim=1
            )
            position_ids = (next_pos + step).view(1, -1, 1).expand(3, -1, 1)
            out = self.model(
                input_ids=ids[:, None],
                attention_mask=attention_mask,
                position_ids=position_ids,
                past_key_values=out.past_key_values,
                use_cache=True,
            )
        return results

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


def _image_key(image: Any) -> Any:
    """Content key of an image (PIL images by their pixels; anything else by identity)."""
    tobytes = getattr(image, "tobytes", None)
    if tobytes is None:
        return ("id", id(image))
    digest = hashlib.blake2b(tobytes(), digest_size=16).digest()
    return (getattr(image, "mode", ""), getattr(image, "size", ()), digest)


def _shared_prompts(
    requests: Sequence[GenerationRequest],
) -> tuple[list[GenerationRequest], torch.Tensor]:
    """The distinct (prompt ids, images) of a batch and, per request, its row among them.

    The G rollouts of one GRPO group share their first turn: prefilling it once instead of G
    times is most of the prefill cost.
    """
    rows: dict[Any, int] = {}
    unique: list[GenerationRequest] = []
    index = []
    for r in requests:
        key = (r.prompt_ids, tuple(_image_key(image) for image in r.images))
        if key not in rows:
            rows[key] = len(unique)
            unique.append(r)
        index.append(rows[key])
    return unique, torch.tensor(index, dtype=torch.long)
