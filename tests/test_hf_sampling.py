"""The hf policy's device-independent sampling: the batched Gumbel-max sampler and chunking.

On a GPU the policy draws tokens with ``gumbel_max`` (per-row seeds from per-row CPU
generators, the noise drawn on the device). Here the same code runs on the CPU: its draws must
follow the distribution, depend on a row's own seed only, and reproduce the log-probs that a
forward pass over the finished sequence gives. ``max_batch`` must not change any result.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from test_hf_policy import SPECIAL, Vision, _replay_logprobs
from test_hf_policy import model as model  # the micro model fixture

from mmsr.policy import GenerationRequest
from mmsr.policy.hf import HFPolicy, gumbel_max


def _generators(seeds: list[int]) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def test_gumbel_max_follows_the_distribution() -> None:
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05, 0.0])
    n = 20_000
    # one row per draw, each with its own seed: the frequencies estimate probs
    ids = gumbel_max(probs.expand(n, -1), _generators(list(range(n))))
    freq = torch.bincount(ids, minlength=5).float() / n
    assert freq[4] == 0  # a zero-probability id is never drawn
    # 4 standard errors of a binomial proportion at n = 20,000 is at most 0.014
    torch.testing.assert_close(freq, probs, atol=0.014, rtol=0)


def test_gumbel_max_rows_depend_on_their_own_seed_only() -> None:
    torch.manual_seed(0)
    probs = torch.softmax(torch.randn(6, 50), dim=-1)
    seeds = [11, 12, 13, 14, 15, 16]
    batched = gumbel_max(probs, _generators(seeds))
    alone = torch.stack(
        [gumbel_max(probs[b : b + 1], _generators([s]))[0] for b, s in enumerate(seeds)]
    )
    assert batched.tolist() == alone.tolist()
    again = gumbel_max(probs, _generators(seeds))
    assert again.tolist() == batched.tolist()
    # successive draws from one generator differ (its stream advances)
    g = _generators([3])
    flat = torch.full((1, 1000), 1e-3)
    assert len({int(gumbel_max(flat, g)[0]) for _ in range(5)}) > 1


def _policy(model: Any, **kwargs: Any) -> HFPolicy:
    return HFPolicy(model, Vision(), lambda ids: "", SPECIAL, temperature=1.0, **kwargs)


def _requests() -> list[GenerationRequest]:
    return [GenerationRequest((), (9, 10, 11), (), 12, seed=s) for s in (1, 2, 3)] + [
        GenerationRequest((), (20, 21), (), 12, seed=4)
    ]


def test_gumbel_sampling_reproduces_logprobs_and_seeds(model: Any) -> None:
    policy = _policy(model, sampler="gumbel")
    together = policy.generate(_requests())
    alone = [policy.generate([r])[0] for r in _requests()]
    assert [g.token_ids for g in together] == [g.token_ids for g in alone]
    assert len({g.token_ids for g in together[:3]}) > 1  # different seeds, different turns
    for request, gen in zip(_requests(), together, strict=True):
        ids = [*request.prompt_ids, *gen.token_ids]
        replay = _replay_logprobs(model, ids, (), 1.0)[-len(gen.token_ids) :]
        torch.testing.assert_close(replay, torch.tensor(gen.logprobs), atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("sampler", ["multinomial", "gumbel"])
def test_max_batch_changes_no_result(model: Any, sampler: str) -> None:
    whole = _policy(model, sampler=sampler).generate(_requests())
    calls: list[int] = []
    original_forward = model.forward

    def counting_forward(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("inputs_embeds") is not None:  # a prefill (decoding feeds input_ids)
            calls.append(kwargs["inputs_embeds"].shape[0])
        return original_forward(*args, **kwargs)

    model.forward = counting_forward
    try:
        chunked = _policy(model, sampler=sampler, max_batch=2).generate(_requests())
    finally:
        model.forward = original_forward
    assert calls == [1, 2]  # chunk 1: one shared prompt; chunk 2: two distinct prompts
    assert [g.token_ids for g in chunked] == [g.token_ids for g in whole]
    for a, b in zip(chunked, whole, strict=True):
        torch.testing.assert_close(
            torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=2e-4, rtol=1e-4
        )


def test_the_default_cpu_sampler_is_unchanged(model: Any) -> None:
    # on the CPU "auto" keeps torch.multinomial (the numerics the seeded tests pin)
    auto = _policy(model).generate(_requests())
    multinomial = _policy(model, sampler="multinomial").generate(_requests())
    assert [g.token_ids for g in auto] == [g.token_ids for g in multinomial]
