"""A token-level policy on a local Qwen2.5-VL model (transformers), with its own sampling loop.

Batched and left-padded, one prefill over each conversation so far (all its images) and then a
KV cache. M-RoPE positions are computed explicitly with the model's own ``get_rope_index`` for
the prefill and continued as text positions while decoding, so they equal the positions of the
whole sequence computed after the fact (``mrope_position_ids``): the training forward pass sees
exactly what sampling saw. Each sample has its own seeded generator; vision and placeholder
tokens are never sampled. Log-probs are recorded under the sampling distribution (``temperature``
applied; greedy records the plain log-softmax).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from mmsr.policy.base import Generation, GenerationRequest


class VisionInputs(Protocol):
    """Turns images into the model's vision inputs: (pixel_values, image_grid_thw)."""

    def __call__(self, images: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass(frozen=True)
class SpecialIds:
    """The token ids the sampling loop must know."""

    pad: int
    end_of_turn: frozenset[int]
    """Ids that end a turn (e.g. <|im_end|>, <|endoftext|>); kept in the sampled ids."""
    image: int
    """The image placeholder id (<|image_pad|>)."""
    suppressed: frozenset[int]
    """Ids never sampled (vision start/end, image and video placeholders)."""


def mrope_position_ids(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    image_grid_thw: torch.Tensor | None,
    image_token_id: int,
) -> torch.Tensor:
    """3-D M-RoPE position ids ``(3, B, T)`` of a batch, over all its images (model's own code)."""
    if image_grid_thw is None or image_grid_thw.numel() == 0:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        pos = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        return pos.unsqueeze(0).expand(3, -1, -1).clone()
    token_types = (input_ids == image_token_id).int()
    positions, _ = model.model.get_rope_index(
        input_ids,
        mm_token_type_ids=token_types,
        image_grid_thw=image_grid_thw,
        attention_mask=attention_mask,
    )
    return positions  # type: ignore[no-any-return]


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
    ) -> None:
        if temperature < 0 or not 0 < top_p <= 1:
            raise ValueError(f"bad sampling settings: temperature={temperature}, top_p={top_p}")
        self.model, self.vision, self.decode, self.special = model, vision, decode, special
        self.temperature, self.top_p = temperature, top_p

    @torch.no_grad()
    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        if not requests:
            return []
        batch = self._prefill_inputs(requests)
        sampled = self._sample(batch, requests)
        return [self._finish(ids, lps, r) for (ids, lps), r in zip(sampled, requests, strict=True)]

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
        inputs["position_ids"] = mrope_position_ids(
            self.model, input_ids, attention_mask, inputs.get("image_grid_thw"), self.special.image
        )
        return inputs

    def _next_token(
        self, logits: torch.Tensor, generators: list[torch.Generator | None]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pick one id per row from ``logits`` (B, V); returns ids (B,) and their log-probs (B,)."""
        logits = logits.float()
        logits[:, list(self.special.suppressed)] = float("-inf")
        if self.temperature == 0:
            logp = torch.log_softmax(logits, dim=-1)
            ids = logp.argmax(dim=-1)
            return ids, logp.gather(1, ids[:, None])[:, 0]
        logp = torch.log_softmax(logits / self.temperature, dim=-1)
        probs = logp.exp()
        if self.top_p < 1:
            sorted_p, order = probs.sort(dim=-1, descending=True)
            drop = sorted_p.cumsum(-1) - sorted_p > self.top_p
            probs = probs.scatter(1, order, sorted_p.masked_fill(drop, 0.0))
        ids = torch.stack(
            [torch.multinomial(probs[b], 1, generator=g)[0] for b, g in enumerate(generators)]
        )
        return ids, logp.gather(1, ids[:, None])[:, 0]

    def _sample(
        self, inputs: dict[str, torch.Tensor], requests: Sequence[GenerationRequest]
    ) -> list[tuple[list[int], list[float]]]:
        generators: list[torch.Generator | None] = []
        for r in requests:
            g = torch.Generator()
            g.manual_seed(r.seed if r.seed is not None else int(torch.randint(0, 2**62, ()).item()))
            generators.append(g)
        out = self.model(**inputs, use_cache=True)
        next_pos = inputs["position_ids"].amax(dim=(0, 2)) + 1  # (B,)
        attention_mask = inputs["attention_mask"]
        results: list[tuple[list[int], list[float]]] = [([], []) for _ in requests]
        done = [r.max_new_tokens <= 0 for r in requests]
        for step in range(max(r.max_new_tokens for r in requests)):
            if all(done):
                break
            ids, logps = self._next_token(out.logits[:, -1, :], generators)
            for b, (token, lp) in enumerate(zip(ids.tolist(), logps.tolist(), strict=True)):
                if done[b]:
                    continue
                results[b][0].append(token)
                results[b][1].append(lp)
                limit = requests[b].max_new_tokens
                done[b] = token in self.special.end_of_turn or len(results[b][0]) >= limit
            ids = torch.where(torch.tensor(done), self.special.pad, ids)
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

    def _finish(
        self, ids: list[int], logprobs: list[float], request: GenerationRequest
    ) -> Generation:
        closed = bool(ids) and ids[-1] in self.special.end_of_turn
        text_ids = ids[:-1] if closed else ids
        return Generation(
            self.decode(text_ids), tuple(ids), tuple(logprobs), "stop" if closed else "length"
        )
