"""A stand-in for the parts of vLLM's offline API that ``mmsr.policy.vllm`` uses (no vLLM here).

``FakeLLM`` answers like ``vllm.LLM``: ``generate(prompts, sampling_params, use_tqdm=...)``
takes ``TokensPrompt`` dicts (``prompt_token_ids``, ``multi_modal_data={"image": [...]}``) and
one ``SamplingParams`` per prompt, expands each ``<|image_pad|>`` into the image's visual tokens
(as vLLM's processor does, here with mmsr's image processor, plus ``extra_tokens`` to make a
mismatch), and returns ``RequestOutput``-shaped objects: the expanded ``prompt_token_ids`` and
one completion with ``token_ids`` and ``logprobs`` (a dict per step, ``{id: Logprob}``). Its
replies are a function of the request's seed, cut at a stop id (kept) or ``max_tokens``.
``sleep``, ``wake_up``, ``collective_rpc`` (runs a callable on a fake worker whose model's
``load_weights`` records the tensors) and ``reset_prefix_cache`` are logged in ``calls``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class FakeSamplingParams:
    """The ``vllm.SamplingParams`` fields the policy sets (an unknown keyword is a TypeError)."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int | None = 16
    seed: int | None = None
    logprobs: int | None = None
    stop_token_ids: list[int] | None = None
    logit_bias: dict[int, float] | None = None
    skip_special_tokens: bool = True


@dataclass(frozen=True)
class Logprob:
    logprob: float
    rank: int | None = None


@dataclass(frozen=True)
class Completion:
    token_ids: list[int]
    logprobs: list[dict[int, Logprob]] | None
    finish_reason: str


@dataclass(frozen=True)
class RequestOutput:
    prompt_token_ids: list[int]
    outputs: list[Completion]


@dataclass
class FakeModel:
    loaded: list[dict[str, torch.Tensor]] = field(default_factory=list)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        batch = {name: tensor.detach().clone() for name, tensor in weights}
        self.loaded.append(batch)
        return set(batch)


@dataclass
class FakeWorker:
    model_runner: Any


class FakeLLM:
    """See the module docstring. ``reply_ids``: the ids a reply is drawn from."""

    def __init__(
        self,
        tokens_per_image: Callable[[Any], int],
        image_pad: int,
        reply_ids: Sequence[int],
        *,
        extra_tokens: int = 0,
        logprob: float = -0.5,
    ) -> None:
        self.tokens_per_image, self.image_pad = tokens_per_image, image_pad
        self.reply_ids, self.extra_tokens, self.logprob = list(reply_ids), extra_tokens, logprob
        self.calls: list[str] = []
        self.prompts: list[dict[str, Any]] = []
        self.params: list[FakeSamplingParams] = []
        self.model = FakeModel()
        self.worker = FakeWorker(model_runner=type("Runner", (), {"model": self.model})())

    def _expand(self, prompt: dict[str, Any]) -> list[int]:
        images = iter(prompt.get("multi_modal_data", {}).get("image", []))
        out: list[int] = []
        for token in prompt["prompt_token_ids"]:
            if token == self.image_pad:
                out += [token] * (self.tokens_per_image(next(images)) + self.extra_tokens)
            else:
                out.append(token)
        return out

    def _reply(self, params: FakeSamplingParams) -> tuple[list[int], str]:
        rng = random.Random(params.seed)
        stops = set(params.stop_token_ids or ())
        ids: list[int] = []
        while len(ids) < (params.max_tokens or 16):
            ids.append(rng.choice(self.reply_ids))
            if ids[-1] in stops:
                return ids, "stop"
        return ids, "length"

    def generate(
        self,
        prompts: Sequence[dict[str, Any]],
        sampling_params: Sequence[FakeSamplingParams],
        use_tqdm: bool = True,
    ) -> list[RequestOutput]:
        assert len(prompts) == len(sampling_params)
        self.calls.append("generate")
        self.prompts += prompts
        self.params += sampling_params
        out = []
        for prompt, params in zip(prompts, sampling_params, strict=True):
            ids, reason = self._reply(params)
            steps = [{t: Logprob(self.logprob - 0.01 * i)} for i, t in enumerate(ids)]
            out.append(RequestOutput(self._expand(prompt), [Completion(ids, steps, reason)]))
        return out

    def sleep(self, level: int = 1) -> None:
        self.calls.append(f"sleep({level})")

    def wake_up(self, tags: list[str] | None = None) -> None:
        self.calls.append(f"wake_up({','.join(tags or ['all'])})")

    def collective_rpc(
        self, method: Callable[..., Any], args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> list[Any]:
        self.calls.append("collective_rpc")
        return [method(self.worker, *args, **(kwargs or {}))]

    def reset_prefix_cache(self) -> bool:
        self.calls.append("reset_prefix_cache")
        return True
