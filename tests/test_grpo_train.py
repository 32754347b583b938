"""The GRPO loop on a micro Qwen2.5-VL built in-process, with scripted search tools.

A random micro model never answers, so every real reward is 0 and every group has zero
variance: nothing would be learnt. These tests therefore swap in a synthetic reward (the share
of even token ids a rollout generated) so that groups differ and the update is real; the world
CLI test at the end runs the real reward.
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import tiny_models
import torch

from mmsr.models import build_tiny_model
from mmsr.rollout import Trajectory
from mmsr.search.base import SearchBackends
from mmsr.train import grpo
from mmsr.train.checkpoint import latest_checkpoint, list_checkpoints
from mmsr.train.grpo import GRPOParts, TrainingDiverged, train_grpo
from mmsr.train.grpo_config import GRPOConfig, load_grpo_config
from mmsr.types import ImageHit, RewardBreakdown, Sample, TextHit

OVERRIDES = [
    "--algo.prompts_per_step=2",
    "--algo.group_size=3",
    "--algo.micro_batch_size=4",
    "--rollout.max_new_tokens=6",
    "--rollout.max_turns=2",
    "--optim.lr=1e-3",
    "--optim.warmup_steps=0",
    "--run.threads=1",
    "--run.tensorboard=false",
    "--run.progress=false",
    "--run.sample_every=1",
    "--run.save_every=1",
]


class Tools:
    def search(self, query: Any, k: int, question: str | None = None) -> list[Any]:
        if isinstance(query, str):
            return [TextHit("Paris", "u", "Paris is the capital of France.")][:k]
        return [ImageHit("Flag of France", "u", tiny_models.image((0, 0, 200)))][:k]


def _png(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    tiny_models.image(color).save(buffer, format="PNG")
    return buffer.getvalue()


def _samples() -> list[Sample]:
    colors = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]
    return [
        Sample(f"q{i}", "Which country's flag is this?", "France", image=_png(c))
        for i, c in enumerate(colors)
    ]


def _parts(kl: bool = True) -> GRPOParts:
    tok = tiny_models.tokenizer()
    model = build_tiny_model("micro", tok, seed=0)
    reference = build_tiny_model("micro", tok, seed=0).requires_grad_(False) if kl else None
    return GRPOParts(
        model=model,
        reference=reference,
        tokenizer=tok,
        image_processor=tiny_models.image_processor("micro"),
        samples=_samples(),
        search=SearchBackends(image=Tools(), text=Tools()),  # type: ignore[arg-type]
    )


def _even_share(turns: Sequence[str], golds: Any, **_: Any) -> RewardBreakdown:
    text = "".join(turns)
    score = sum(ord(c) % 2 == 0 for c in text) / max(len(text), 1)
    return RewardBreakdown(score=score, accuracy=0.0, format_score=0.0, search_count=0, answer=None)


@pytest.fixture
def synthetic_reward(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(grpo, "score_trajectory", _even_share)


def _config(*extra: str) -> GRPOConfig:
    return load_grpo_config("tiny-cpu", [*OVERRIDES, *extra])


def _params(model: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _metrics(out: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_two_steps_train_the_policy(tmp_path: Path, synthetic_reward: None) -> None:
    parts = _parts()
    before = _params(parts.model)
    final = train_grpo(_config("--run.steps=2"), parts, tmp_path)
    rows = _metrics(tmp_path)
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        assert all(map(torch.isfinite, map(torch.tensor, row.values())))
        assert row["reward/zero_variance_groups"] < 1.0  # the synthetic reward varies
        assert row["loss/grad_norm"] > 0
    assert final["perf/rollouts_per_min"] > 0
    changed = [k for k, v in _params(parts.model).items() if not torch.equal(v, before[k])]
    assert "model.language_model.layers.0.self_attn.q_proj.weight" in changed
    # the reference stays the initial model
    assert parts.reference is not None
    for k, v in parts.reference.state_dict().items():
        assert torch.equal(v, before[k]), k
    # outputs: resolved config, checkpoints, sampled trajectories
    assert load_grpo_config(str(tmp_path / "config.yaml")) == _config("--run.steps=2")
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == [
        "step_000001",
        "step_000002",
    ]
    sampled = (tmp_path / "samples" / "step_000002" / "trajectories.jsonl").read_text()
    lines = [json.loads(line) for line in sampled.splitlines()]
    assert len(lines) == 6
    # each sample says which prompt's group it is in, its reward, advantage and golds
    group = _config().algo.group_size
    assert [line["group"] for line in lines] == [i // group for i in range(6)]
    assert all(line["step"] == 2 and line["golds"] == ["France"] for line in lines)
    first = lines[:group]
    assert len({line["id"] for line in first}) == 1
    assert sum(line["advantage"] for line in first) == pytest.approx(0.0, abs=1e-5)
    assert all(0.0 <= line["reward"]["score"] <= 1.0 for line in lines)
    assert all(line["images"][0] for line in lines)  # the question image is saved
    # a fresh run never mixes with an earlier run's checkpoints
    with pytest.raises(ValueError, match="already holds checkpoints"):
        train_grpo(_config("--run.steps=2"), parts, tmp_path)


def test_masked_tokens_get_no_gradient(
    tmp_path: Path, synthetic_reward: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    real = grpo.token_logprobs

    def recording(model: Any, batch: Any, **kwargs: Any) -> torch.Tensor:
        logp = real(model, batch, **kwargs)
        if logp.requires_grad:
            logp.retain_grad()
            seen.append((logp, batch.loss_mask))
        return logp

    monkeypatch.setattr(grpo, "token_logprobs", recording)
    train_grpo(_config("--run.steps=1", "--run.save_every=0"), _parts(), tmp_path)
    assert seen
    for logp, mask in seen:
        assert logp.grad is not None
        assert torch.count_nonzero(logp.grad[mask == 0]) == 0  # prompt, tool turns, padding
        assert torch.count_nonzero(logp.grad[mask == 1]) > 0


def test_resume_equals_uninterrupted(tmp_path: Path, synthetic_reward: None) -> None:
    straight = _parts()
    train_grpo(_config("--run.steps=2"), straight, tmp_path / "a")
    first = _parts()
    train_grpo(_config("--run.steps=1"), first, tmp_path / "b")
    torch.manual_seed(1234)  # a new process would start from other RNG states
    resumed = _parts()  # fresh weights: everything must come from the checkpoint
    train_grpo(_config("--run.steps=2"), resumed, tmp_path / "b", resume=True)
    expected, got = _params(straight.model), _params(resumed.model)
    for key, value in expected.items():
        assert torch.equal(value, got[key]), key
    rows_a, rows_b = _metrics(tmp_path / "a"), _metrics(tmp_path / "b")
    assert [r["step"] for r in rows_b] == [1, 2]
    # seeded: two runs from the same config agree on every step-1 number but the timings
    same = {k: v for k, v in rows_a[0].items() if not k.startswith("perf/")}
    assert same == {k: v for k, v in rows_b[0].items() if not k.startswith("perf/")}
    for key in ("reward/mean", "loss/total", "loss/grad_norm"):
        assert rows_a[1][key] == rows_b[1][key], key


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(
    tmp_path: Path, synthetic_reward: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = _parts()
    train_grpo(_config("--run.steps=1"), parts, tmp_path)
    good = _params(parts.model)
    real = grpo.grpo_loss

    def poisoned(*args: Any, **kwargs: Any) -> Any:
        loss, stats = real(*args, **kwargs)
        return loss * float("nan"), stats

    monkeypatch.setattr(grpo, "grpo_loss", poisoned)
    with pytest.raises(TrainingDiverged, match=r"step 2: the loss is nan.*step_000001"):
        train_grpo(_config("--run.steps=3"), parts, tmp_path, resume=True)
    assert latest_checkpoint(tmp_path / "checkpoints") == tmp_path / "checkpoints/step_000001"
    for key, value in _params(parts.model).items():
        assert torch.equal(value, good[key]), key  # the weights were not touched


def test_data_order_and_seeds_are_pure_functions_of_the_step() -> None:
    # each epoch visits every question once; different epochs, different orders
    order = [i for step in range(1, 7) for i in grpo.prompt_indices(5, 0, step, 2)]
    assert sorted(order[:5]) == sorted(order[5:10]) == list(range(5))
    assert grpo.prompt_indices(5, 0, 3, 2) == order[4:6]
    assert grpo.rollout_seeds(0, 1, 4) != grpo.rollout_seeds(0, 2, 4)
    assert len(set(grpo.rollout_seeds(0, 1, 64))) == 64


@pytest.mark.parametrize(
    ("schedule", "warmup", "expected"),
    [
        ("constant", 0, [1.0, 1.0, 1.0, 1.0]),  # flat
        ("constant", 2, [0.5, 1.0, 1.0, 1.0]),  # linear warm-up over 2 steps
        ("cosine", 0, [1.0, 0.775, 0.325, 0.1]),  # half cosine from 1 to 0.1 over 4 steps
        ("cosine", 2, [0.5, 1.0, 1.0, 0.1]),  # warm-up, then cosine over the last 2 steps
    ],
)
def test_lr_schedule(schedule: str, warmup: int, expected: list[float]) -> None:
    cfg = _config(f"--optim.schedule={schedule}", f"--optim.warmup_steps={warmup}")
    optim = dataclasses.replace(cfg.optim, min_lr_ratio=0.1)
    factor = grpo.lr_factor(optim, total_steps=4)
    assert [round(factor(k), 4) for k in range(4)] == pytest.approx(expected, abs=1e-4)


def test_rollout_metrics_count_searches_and_ends(
    tmp_path: Path, synthetic_reward: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    captured: list[Trajectory] = []
    real = grpo.rollout_metrics

    categories: list[str] = []
    scored: list[RewardBreakdown] = []

    def capture(
        trajs: Sequence[Trajectory], rewards: Sequence[RewardBreakdown], cats: Sequence[str]
    ) -> Any:
        captured.extend(trajs)
        categories.extend(cats)
        scored.extend(rewards)
        return real(trajs, rewards, cats)

    monkeypatch.setattr(grpo, "rollout_metrics", capture)
    metrics = train_grpo(_config("--run.steps=1", "--run.save_every=0"), _parts(), tmp_path)
    ends = sum(v for k, v in metrics.items() if k.startswith("rollout/end/"))
    assert ends == pytest.approx(1.0)
    assert metrics["search/ratio"] == sum(t.searched for t in captured) / len(captured)
    assert metrics["rollout/turns"] == sum(len(t.actions) for t in captured) / len(captured)
    for category in set(categories) - {""}:  # per need class, from the labels (measurement only)
        picked = [t for t, c in zip(captured, categories, strict=True) if c == category]
        expected = sum(t.searched for t in picked) / len(picked)
        assert metrics[f"search/ratio/{category}"] == pytest.approx(expected)
    labels = ["search_free" if i % 2 else "search_required" for i in range(len(captured))]
    split = real(captured, scored, labels)
    for label in set(labels):
        picked = [t for t, c in zip(captured, labels, strict=True) if c == label]
        assert split[f"search/ratio/{label}"] == sum(t.searched for t in picked) / len(picked)


def test_a_second_ppo_epoch_sees_a_ratio_away_from_one(
    tmp_path: Path, synthetic_reward: None
) -> None:
    one = train_grpo(_config("--run.steps=1", "--run.save_every=0"), _parts(), tmp_path / "a")
    two = train_grpo(
        _config("--run.steps=1", "--run.save_every=0", "--algo.ppo_epochs=2"),
        _parts(),
        tmp_path / "b",
    )
    # epoch 1 is on-policy (ratio 1 up to sampling round-off); epoch 2 follows an update
    assert one["loss/ratio_mean"] == pytest.approx(1.0, abs=1e-4)
    assert abs(two["loss/ratio_mean"] - 1.0) > 1e-4
    assert torch.isfinite(torch.tensor(two["loss/total"]))


def test_nan_gradient_stops_before_the_update(tmp_path: Path, synthetic_reward: None) -> None:
    parts = _parts()
    before = _params(parts.model)
    weight = parts.model.model.language_model.norm.weight
    weight.register_hook(lambda grad: grad * float("nan"))
    with pytest.raises(TrainingDiverged, match=r"step 1: the gradient norm is nan.*none"):
        train_grpo(_config("--run.steps=1"), parts, tmp_path)
    for key, value in _params(parts.model).items():
        assert torch.equal(value, before[key]), key
    assert latest_checkpoint(tmp_path / "checkpoints") is None


def test_rollout_images_carry_their_sample_id(
    tmp_path: Path, synthetic_reward: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the fvqa search backend finds a question's results by image.info["data_id"]
    seen: list[Any] = []
    real = grpo.RolloutTask

    def capture(id: str, question: str, image: Any) -> Any:
        seen.append((id, image.info.get("data_id")))
        return real(id, question, image)

    monkeypatch.setattr(grpo, "RolloutTask", capture)
    train_grpo(_config("--run.steps=1", "--run.save_every=0"), _parts(), tmp_path)
    assert seen and all(i == d for i, d in seen)


def test_skipping_zero_advantage_rollouts_leaves_the_update_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the first group's rewards all agree (advantage 0), the second group's vary
    calls = {"n": 0}

    def first_group_flat(turns: Sequence[str], golds: Any, **kw: Any) -> RewardBreakdown:
        calls["n"] += 1
        if (calls["n"] - 1) % 6 < 3:
            return RewardBreakdown(
                score=0.3, accuracy=0.0, format_score=0.0, search_count=0, answer=None
            )
        return _even_share(turns, golds, **kw)

    monkeypatch.setattr(grpo, "score_trajectory", first_group_flat)
    rows: list[int] = []
    real = grpo.token_logprobs

    def counting(model: Any, batch: Any, **kwargs: Any) -> torch.Tensor:
        rows.append(int(batch.input_ids.shape[0]))
        return real(model, batch, **kwargs)

    monkeypatch.setattr(grpo, "token_logprobs", counting)
    args = ("--run.steps=1", "--run.save_every=0", "--algo.kl_beta=0")
    full, skipped = _parts(kl=False), _parts(kl=False)
    all_rows = train_grpo(_config(*args), full, tmp_path / "a")
    assert rows == [4, 2] and all_rows["loss/trained_rollouts"] == 1.0
    rows.clear()
    part = train_grpo(_config(*args, "--algo.skip_zero_advantage=true"), skipped, tmp_path / "b")
    assert rows == [3] and part["loss/trained_rollouts"] == 0.5  # the flat group left out
    assert part["loss/trained_tokens"] == all_rows["loss/trained_tokens"]  # same token mean
    assert part["loss/grad_norm"] == pytest.approx(all_rows["loss/grad_norm"], rel=1e-4)
    # the ratio is a mean over the tokens trained (on-policy: 1), not scaled by the share kept
    assert part["loss/ratio_mean"] == pytest.approx(1.0, abs=1e-4)
    assert all_rows["loss/ratio_mean"] == pytest.approx(1.0, abs=1e-4)
    after_full, after_skip = _params(full.model), _params(skipped.model)
    for key, value in after_full.items():
        torch.testing.assert_close(after_skip[key], value, rtol=1e-4, atol=1e-6, msg=key)


def test_micro_batches_take_the_rollouts_by_length() -> None:
    """``by_length`` orders the kept rollouts shortest first (ties in arrival order), so a
    micro-batch pads to a length near its own (``bench/update_order.py`` times it)."""
    from mmsr.train.batch import TokenSequence

    lengths = [5, 2, 9, 2, 7]
    seqs = [TokenSequence((1,) * n, (0,) * n, (0.0,) * n) for n in lengths]
    assert grpo.by_length(seqs, [0, 1, 2, 3, 4]) == [1, 3, 0, 4, 2]
    assert grpo.by_length(seqs, [4, 2, 0]) == [0, 4, 2]


def test_the_probe_follows_fixed_questions_greedily(
    tmp_path: Path, synthetic_reward: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    temperatures: list[tuple[float, int]] = []
    real_run = grpo.RolloutEngine.run

    def recording(self: Any, tasks: Any, seeds: Any) -> Any:
        temperatures.append((self.policy.temperature, len(tasks)))
        return real_run(self, tasks, seeds)

    monkeypatch.setattr(grpo.RolloutEngine, "run", recording)
    probing = ("--run.probe_every=2", "--run.probe_prompts=2", "--run.steps=3")
    final = train_grpo(_config(*probing), _parts(), tmp_path)
    # before step 1, after steps 2 and 3 (the last); training rollouts sample at temperature 1
    assert temperatures == [(0.0, 2), (1.0, 6), (1.0, 6), (0.0, 2), (1.0, 6), (0.0, 2)]
    probes = [json.loads(line) for line in (tmp_path / "probe.jsonl").read_text().splitlines()]
    assert [p["step"] for p in probes] == [0, 2, 3]
    assert all(0.0 <= p["probe/reward/mean"] <= 1.0 and "probe/search/ratio" in p for p in probes)
    rows = _metrics(tmp_path)
    assert ["probe/reward/mean" in r for r in rows] == [False, True, True]
    assert final["probe/reward/mean"] == probes[-1]["probe/reward/mean"]
    # the same questions every time, a pure function of the seed
    assert grpo.probe_indices(10, 7, 4) == grpo.probe_indices(10, 7, 4)
    assert sorted(grpo.probe_indices(3, 7, 64)) == [0, 1, 2]
    with pytest.raises(ValueError, match="probe_every"):
        _config("--run.probe_every=-1")


def test_a_step_whose_groups_all_agree_trains_nothing_and_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def flat(turns: Sequence[str], golds: Any, **_: Any) -> RewardBreakdown:
        return RewardBreakdown(
            score=0.1, accuracy=0.0, format_score=1.0, search_count=0, answer=None
        )

    monkeypatch.setattr(grpo, "score_trajectory", flat)
    parts = _parts(kl=False)
    before = _params(parts.model)
    args = ("--run.steps=2", "--run.save_every=0", "--algo.kl_beta=0")
    final = train_grpo(_config(*args, "--algo.skip_zero_advantage=true"), parts, tmp_path)
    assert final["loss/trained_rollouts"] == 0.0 and final["loss/grad_norm"] == 0.0
    assert all(torch.isfinite(torch.tensor(v)) for v in final.values())
    for key, value in _params(parts.model).items():
        assert torch.equal(value, before[key]), key


def test_the_probe_reads_the_decision_on_a_world(
    small_world: tuple[Path, Path], tmp_path: Path
) -> None:
    """On a built world's questions the probe also logs the decision probe's P(search) per
    class and its AUC (the curve of RL learning when to search); elsewhere it stays off."""
    from mmsr.data import load_samples

    world = small_world[0]
    samples = load_samples(world / "train.parquet")
    knowledge = [str(s.extra["knowledge"]) for s in samples]
    picked = [samples[knowledge.index("head")], samples[knowledge.index("tail")]]
    parts = dataclasses.replace(_parts(kl=False), samples=picked)
    cfg = _config(f"--data.train={world / 'train.parquet'}")
    read = grpo._decision_reader(cfg, parts, picked)
    assert read is not None
    figures = read(parts.model.eval())
    both = {"decision/auc", "decision/p_search/head", "decision/p_search/tail"}
    assert both <= set(figures) <= {*both, "decision/auc_pictured"}  # NaN when both are named
    assert figures["decision/auc"] in (0.0, 0.5, 1.0)  # one question a class
    assert all(0.0 <= figures[f"decision/p_search/{k}"] <= 1.0 for k in ("head", "tail"))
    # questions that are not the world's (or a training file outside a world): no probe
    assert grpo._decision_reader(cfg, parts, _samples()) is None
    elsewhere = _config(f"--data.train={tmp_path / 'train.parquet'}")
    assert grpo._decision_reader(elsewhere, parts, picked) is None
