"""Balancing from a policy: N rollouts per question on the engine with the local search of the
session's small world, their outcomes, and the paper's rule (§3) applied to them — discarded if
never correct, search_free if once correct without search, else search_required — through
``iter_outcomes`` and through ``mmsr data balance --policy`` as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mmsr.cli import main
from mmsr.data import RolloutOutcome, balance, load_outcomes, load_samples
from mmsr.data.outcomes import iter_outcomes
from mmsr.policy.scripted import Script, ScriptedPolicy
from mmsr.protocol.actions import IMAGE_SEARCH_TAG
from mmsr.rollout import RolloutEngine
from mmsr.search.registry import build_search
from mmsr.types import Role, Sample, Turn

R = RolloutOutcome

# What the script does in each rollout of question i (rollout k follows PLANS[i][k]):
# "gold" answers right away, "wrong" says "unknown", "image-…"/"text-…" searches first.
PLANS = [
    ["gold", "wrong"],  # right once without search: search_free
    ["wrong", "wrong"],  # never right: discarded
    ["image-gold", "wrong"],  # right only after an image search: search_required (image)
    ["image-gold", "gold"],  # right without search in one rollout: search_free
    ["image-wrong", "wrong"],  # searched, never right: discarded
    ["text-gold", "text-gold"],  # right only after text searches: search_required (text)
]
EXPECTED_OUTCOMES = [
    [R(True), R(False)],
    [R(False), R(False)],
    [R(True, 1, 0), R(False)],
    [R(True, 1, 0), R(True)],
    [R(False, 1, 0), R(False)],
    [R(True, 0, 1), R(True, 0, 1)],
]


def _planned_script(samples: list[Sample]) -> Script:
    """A script following ``PLANS``; the plan of a rollout rides in its first reason, so the
    later turns know which rollout they are in."""
    seen: dict[int, int] = {}

    def script(turns: tuple[Turn, ...]) -> str:
        i = next(j for j, s in enumerate(samples) if s.question in turns[0].text)
        mine = [t.text for t in turns if t.role is Role.ASSISTANT]
        if not mine:
            k = seen.get(i, 0)
            seen[i] = k + 1
            plan = PLANS[i][k]
        else:
            plan = mine[0].split("plan:")[1].split("<")[0]
        tool, _, then = plan.rpartition("-")
        answer = samples[i].answer if then == "gold" else "unknown"
        if tool and not mine:
            action = IMAGE_SEARCH_TAG if tool == "image" else f"<text_search>{answer}</text_search>"
            return f"<reason>plan:{plan}</reason>{action}"
        return f"<reason>plan:{plan}</reason><answer>{answer}</answer>"

    return script


def test_outcomes_of_a_scripted_policy_follow_the_papers_rule(
    small_world: tuple[Path, Path],
) -> None:
    world, index = small_world
    samples = load_samples(world / "test.parquet")[: len(PLANS)]
    tools = build_search({"backend": "local", "index": str(index)})
    policy = ScriptedPolicy(_planned_script(samples))
    engine = RolloutEngine(policy, image_search=tools.image, text_search=tools.text)
    outcomes: dict[str, list[RolloutOutcome]] = {}
    for data_id, outcome in iter_outcomes(engine, samples, 2, batch_size=5):
        outcomes.setdefault(data_id, []).append(outcome)
    assert [outcomes[s.id] for s in samples] == EXPECTED_OUTCOMES
    result = balance(samples, lambda s, n: outcomes[s.id][:n], n=2, ratio=0.5)
    assert (result.labelled, result.discarded) == (4, 2)
    labels = {s.id: (s.category, s.extra["search_need"]) for s in result.samples}
    assert labels == {
        samples[0].id: ("search_free", "none"),
        samples[2].id: ("search_required", "image"),
        samples[3].id: ("search_free", "none"),
        samples[5].id: ("search_required", "text"),
    }


def _papers_rule(outcomes: list[dict[str, Any]]) -> str | None:
    """The paper's rule, written out again over the JSON lines."""
    correct = [o for o in outcomes if o["correct"]]
    if not correct:
        return None
    free = any(o["image_searches"] + o["text_searches"] == 0 for o in correct)
    return "search_free" if free else "search_required"


def test_cli_balance_with_a_policy_writes_outcomes_then_balances(
    small_world: tuple[Path, Path], tmp_path: Path
) -> None:
    world, index = small_world
    data, outcomes, out = world / "test.parquet", tmp_path / "o.jsonl", tmp_path / "b.parquet"
    args = ["data", "balance", data, outcomes, out, "--policy", "scripted:top-title"]
    args += ["--search", f"local:{index}", "--rollouts", "2", "--ratio", "1.0"]
    done = subprocess.run(
        [sys.executable, "-m", "mmsr.cli", *map(str, args)],
        capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    samples = [s for s in load_samples(data) if s.image is not None]
    lines = [json.loads(x) for x in outcomes.read_text().splitlines()]
    assert len(lines) == 2 * len(samples)
    assert len(load_outcomes(outcomes)) == len(samples)
    # top-title always searches the image first, then answers the top hit's title
    assert all(o["image_searches"] == 1 and o["text_searches"] == 0 for o in lines)
    expected = {s.id: _papers_rule([o for o in lines if o["data_id"] == s.id]) for s in samples}
    labelled = {k: v for k, v in expected.items() if v is not None}
    assert 0 < len(labelled) < len(samples)  # some questions kept, some discarded
    assert summary["discarded"] == len(samples) - len(labelled)
    assert summary["labelled"] == summary["written"] == len(labelled)
    assert {s.id: s.category for s in load_samples(out)} == labelled


def test_cli_balance_with_a_policy_that_never_answers_discards_everything(
    small_world: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    world, _ = small_world
    outcomes, out = tmp_path / "o.jsonl", tmp_path / "b.parquet"
    args = ["data", "balance", str(world / "test.parquet"), str(outcomes), str(out)]
    assert main([*args, "--policy", "scripted:abstain", "--rollouts", "1"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["written"] == summary["labelled"] == 0
    assert summary["discarded"] == len(outcomes.read_text().splitlines()) > 0
    assert load_samples(out) == []


def test_cli_balance_refuses_search_without_a_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = [str(tmp_path / name) for name in ("in.parquet", "o.jsonl", "out.parquet")]
    assert main(["data", "balance", *paths, "--search", "local:somewhere"]) == 1
    assert "--search needs --policy" in capsys.readouterr().err
