"""KV reuse across turns in the hf policy, on the micro Qwen2.5-VL of ``test_hf_policy``.

With reuse a later turn prefills only what follows the cached conversation (the sampled
end-of-turn token and the tool turn). The checks: a forward pass over each finished
trajectory still reproduces the sampling log-probs (multi-turn, a batch of conversations of
different lengths and image counts, so left-padded in both parts of the prefill); reuse on
and off sample the same tokens from the same seeds; only the new tokens are fed; an image a
group shares is encoded once per batch; nothing is reused across runs (the weights may have
changed in between).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
import torch
from test_hf_policy import (
    IM_END,
    SPECIAL,
    ToyEncoder,
    Vision,
    _image,
    _replay_logprobs,
    micro_model,
)
from test_hf_policy import model as model  # the micro model fixture

from mmsr.policy import GenerationRequest
from mmsr.policy.hf import HFPolicy
from mmsr.policy.kv_cache import GrowingCache, PrefixStore, RowCache
from mmsr.rollout import RolloutEngine, RolloutLimits, RolloutTask, Trajectory
from mmsr.types import ImageHit, Role, Turn

SCRIPT = [30, 31, 32, IM_END]  # the first turn ends with these: an image search


def _force(request: GenerationRequest, sampled: list[int]) -> int | None:
    """First turn: a seed-dependent id once or twice (so the rows of a group differ), then
    ``SCRIPT``; the second turn is sampled freely."""
    if any(t.role is Role.ASSISTANT for t in request.turns):
        return None
    seed = request.seed or 0
    script = [40 + seed % 7] * (1 + seed % 2) + SCRIPT
    return script[len(sampled)] if len(sampled) < len(script) else None


def _decode(ids: list[int]) -> str:
    if len(ids) >= 3 and ids[-3:] == SCRIPT[:3]:
        return "<reason>?</reason><search><img></search>"
    return "<reason>ok</reason><answer>x</answer>"


class Thumbs:
    """Red questions get two thumbnails, the others one: tool turns of different lengths."""

    def search(self, image: Any, k: int) -> list[ImageHit]:
        hits = [ImageHit("a", "u", _image("yellow")), ImageHit("b", "u", _image("white"))]
        return hits if image.getpixel((0, 0)) == (255, 0, 0) else hits[:1]


class CountingVision(Vision):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []

    def __call__(self, images: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls.append(len(images))
        return super().__call__(images)


def _tasks() -> list[RolloutTask]:
    red, blue = _image("red"), _image("blue")
    # two first turns of different lengths (so left-padded), three rollouts each
    short = Turn(Role.USER, "what?<image>", (red,))
    long = Turn(Role.USER, "what is in this<image>picture?", (blue,))
    return [RolloutTask(f"r{g}", "what?", red, first_turn=short) for g in range(3)] + [
        RolloutTask(f"b{g}", "what is it?", blue, first_turn=long) for g in range(3)
    ]


def _run(model: Any, *, kv_reuse: bool, vision: Vision | None = None) -> list[Trajectory]:
    policy = HFPolicy(
        model, vision or Vision(), _decode, SPECIAL, temperature=1.0, force=_force,
        kv_reuse=kv_reuse,
    )  # fmt: skip
    engine = RolloutEngine(
        policy, image_search=Thumbs(), encoder=ToyEncoder(), limits=RolloutLimits(max_new_tokens=8)
    )
    return engine.run(_tasks(), seeds=[3, 4, 5, 6, 7, 8])


def _assert_replays(model: Any, trajectories: list[Trajectory]) -> None:
    for traj in trajectories:
        assert len(traj.actions) == 2  # every rollout searched, then went on
        replay = _replay_logprobs(model, traj.token_ids, traj.images, 1.0)
        trained = torch.tensor(traj.loss_mask[1:]).bool()
        torch.testing.assert_close(
            replay[trained], torch.tensor(traj.logprobs[1:])[trained], atol=2e-4, rtol=1e-4
        )


def test_reuse_reproduces_logprobs_and_samples_what_a_full_prefill_samples(model: Any) -> None:
    reused, full = _run(model, kv_reuse=True), _run(model, kv_reuse=False)
    _assert_replays(model, reused)
    assert len({t.token_ids for t in reused}) == 6  # the rows of a group differ
    for a, b in zip(reused, full, strict=True):
        # the same seeds give the same tokens; log-probs agree to float rounding
        assert a.token_ids == b.token_ids
        torch.testing.assert_close(
            torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=2e-4, rtol=1e-4
        )


def _new_tokens_per_prefill(model: Any, kv_reuse: bool) -> tuple[list[list[int]], list[Any]]:
    """The real tokens each prefill row fed, per prefill call, and the trajectories."""
    fed: list[list[int]] = []
    original_forward = model.forward

    def counting_forward(*args: Any, **kwargs: Any) -> Any:
        embeds = kwargs.get("inputs_embeds")
        if embeds is not None:  # a prefill: count the unmasked positions of the new part
            fed.append(kwargs["attention_mask"][:, -embeds.shape[1] :].sum(1).tolist())
        return original_forward(*args, **kwargs)

    model.forward = counting_forward
    try:
        trajectories = _run(model, kv_reuse=kv_reuse)
    finally:
        model.forward = original_forward
    return fed, trajectories


@pytest.mark.parametrize("kv_reuse", [True, False])
def test_a_later_turn_prefills_only_the_new_tokens(model: Any, kv_reuse: bool) -> None:
    (first, second), trajectories = _new_tokens_per_prefill(model, kv_reuse)
    assert sorted(first) == [15, 33]  # two distinct first turns (a group shares its prompt)
    expected = []
    for traj in trajectories:
        mask = list(traj.loss_mask)
        user_start = mask.index(1) + mask[mask.index(1) :].index(0)  # first id of turn 2's user
        user_end = user_start + mask[user_start:].index(1)
        # reuse: the first turn's last sampled id (never fed while sampling) and the tool turn
        expected.append(user_end - user_start + 1 if kv_reuse else user_end)
    assert sorted(second) == sorted(expected)


def test_an_image_a_group_shares_is_encoded_once_per_batch(model: Any) -> None:
    vision = CountingVision()
    _run(model, kv_reuse=True, vision=vision)
    # turn 1: the two question images; turn 2: the two distinct thumbnails for all six rows
    assert vision.calls == [2, 2]
    vision = CountingVision()
    _run(model, kv_reuse=False, vision=vision)
    assert vision.calls == [2, 4]  # no cache: the question images again, each still once


def test_nothing_is_reused_across_runs(model: Any) -> None:
    other = micro_model()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05 * torch.randn_like(p))
    policy = HFPolicy(model, Vision(), _decode, SPECIAL, temperature=1.0, force=_force)
    engine = RolloutEngine(
        policy, image_search=Thumbs(), encoder=ToyEncoder(), limits=RolloutLimits(max_new_tokens=8)
    )
    engine.run(_tasks(), seeds=[3, 4, 5, 6, 7, 8])
    assert len(policy._store) == 0  # the run's end dropped its caches
    policy.model = other  # what an optimizer step does, in effect
    _assert_replays(other, engine.run(_tasks(), seeds=[3, 4, 5, 6, 7, 8]))
    # a direct call without a session keeps nothing
    policy.generate([GenerationRequest((), (9, 10), (), 4, seed=1)])
    assert len(policy._store) == 0


def test_the_store_tells_apart_conversations_with_the_same_ids_and_other_images() -> None:
    # two questions worded alike, with other pictures: the ids match, the images do not
    source = GrowingCache(1, 4)
    ids = (9, 10, 11)
    rows = {
        (ids, (key, "a")): RowCache(ids, (key, "a"), 3, source, row, ((0, 3),))
        for row, key in enumerate(("red", "green"))
    }
    store = PrefixStore()
    store.start("run")
    store.replace(rows)
    assert len(store) == 2
    hit = store.lookup((*ids, 12), ("green", "a", "thumb"))
    assert hit is not None and hit.row == 1
    assert store.lookup((*ids, 12), ("blue", "a")) is None
    assert store.lookup(ids, ("red", "a")) is None  # a prefix must leave a token to feed
    store.start("another run")
    assert len(store) == 0
