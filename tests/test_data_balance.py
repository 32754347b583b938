"""Search balancing (paper §3): labels from rollouts, sampling to a ratio, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from _data_builders import world_row, write_jsonl, write_world

from mmsr.data import (
    DataError,
    RolloutOutcome,
    balance,
    label_outcomes,
    load_outcomes,
    load_samples,
    sample_to_ratio,
)
from mmsr.types import Sample

R = RolloutOutcome
WRONG, DIRECT = R(False), R(True)
IMG, TXT, BOTH = R(True, 1, 0), R(True, 0, 2), R(True, 1, 1)


@pytest.mark.parametrize(
    ("outcomes", "expected"),
    [
        ([WRONG, WRONG, R(False, 1, 1)], None),  # never correct: discarded
        ([], None),  # no rollouts at all: nothing to label
        ([WRONG, DIRECT, IMG], ("search_free", "none", 2)),  # once right without search
        ([WRONG, IMG, IMG], ("search_required", "image", 2)),  # only image search worked
        ([TXT, WRONG], ("search_required", "text", 1)),  # only text search worked
        ([BOTH, BOTH, WRONG], ("search_required", "both", 2)),  # needed both tools
        ([BOTH, TXT], ("search_required", "text", 2)),  # the smallest search that sufficed
        ([TXT, IMG], ("search_required", "image", 2)),  # image preferred when either alone did
        ([R(False), R(False, 1, 0), BOTH], ("search_required", "both", 1)),  # wrong ones ignored
    ],
)
def test_label_outcomes(
    outcomes: list[RolloutOutcome], expected: tuple[str, str, int] | None
) -> None:
    label = label_outcomes(outcomes)
    if expected is None:
        assert label is None
    else:
        assert label is not None
        assert (label.category, label.search_need, label.correct) == expected
        assert label.rollouts == len(outcomes)


def _samples(n_free: int, n_req: int) -> list[Sample]:
    cats = ["search_free"] * n_free + ["search_required"] * n_req
    return [Sample(id=f"s{i}", question="q", answer="a", category=c) for i, c in enumerate(cats)]


@pytest.mark.parametrize(
    ("n_free", "n_req", "ratio", "kept"),
    [
        (50, 50, 0.68, (24, 50)),  # free over-represented: 50*0.32/0.68 = 23.5 -> 24
        (10, 100, 0.68, (10, 21)),  # required over-represented: 10*0.68/0.32=21.25
        (10, 100, 0.5, (10, 10)),  # even split
        (10, 100, 1.0, (0, 100)),  # only search_required
        (10, 100, 0.0, (10, 0)),  # only search_free
        (0, 5, 0.68, (0, 0)),  # no free questions: nothing can be balanced
    ],
)
def test_sample_to_ratio(n_free: int, n_req: int, ratio: float, kept: tuple[int, int]) -> None:
    out = sample_to_ratio(_samples(n_free, n_req), ratio, seed=0)
    free = sum(s.category == "search_free" for s in out)
    assert (free, len(out) - free) == kept
    ids = [int(s.id[1:]) for s in out]
    assert ids == sorted(ids)  # original order kept


def test_sample_to_ratio_is_seeded() -> None:
    samples = _samples(30, 100)
    first = sample_to_ratio(samples, 0.68, seed=1)
    assert first == sample_to_ratio(samples, 0.68, seed=1)
    assert first != sample_to_ratio(samples, 0.68, seed=2)
    with pytest.raises(ValueError, match="ratio"):
        sample_to_ratio(samples, 1.5, seed=0)


class ScriptedPolicy:
    """Answers from a script keyed by the question's id; records what it was asked."""

    def __init__(self, script: dict[str, list[RolloutOutcome]]) -> None:
        self.script = script
        self.calls: list[tuple[str, int]] = []

    def __call__(self, sample: Sample, n: int) -> Sequence[RolloutOutcome]:
        self.calls.append((sample.id, n))
        return self.script.get(sample.id, [])[:n]


def test_balance_with_scripted_policy() -> None:
    samples = [Sample(id=f"q{i}", question="q", answer="a") for i in range(8)]
    script = {
        "q0": [DIRECT, WRONG],
        "q1": [WRONG, WRONG],  # never correct
        "q2": [IMG, WRONG],
        "q3": [TXT, TXT],
        "q4": [BOTH],
        "q5": [WRONG, WRONG, DIRECT],  # correct only in the third rollout: cut off by n=2
        "q6": [DIRECT],
        # q7: no rollouts
    }
    policy = ScriptedPolicy(script)
    result = balance(samples, policy, n=2, ratio=0.6, seed=0)
    assert policy.calls == [(f"q{i}", 2) for i in range(8)]
    assert (result.labelled, result.discarded, result.no_rollouts) == (5, 2, 1)
    # 2 free (q0, q6), 3 required (q2, q3, q4): exactly 60 % already
    assert [s.id for s in result.samples] == ["q0", "q2", "q3", "q4", "q6"]
    assert (result.search_free, result.search_required) == (2, 3)
    by_id = {s.id: s for s in result.samples}
    assert by_id["q3"].extra == {"search_need": "text", "rollouts": 2, "rollouts_correct": 2}
    assert by_id["q0"].category == "search_free"


def test_load_outcomes_groups_by_id(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "o.jsonl",
        [
            {"data_id": "a", "correct": True, "image_searches": 1, "text_searches": 0},
            {"data_id": "b", "correct": False},
            {"data_id": "a", "correct": False, "image_searches": 0, "text_searches": 2},
        ],
    )
    grouped = load_outcomes(path)
    assert grouped == {"a": [R(True, 1, 0), R(False, 0, 2)], "b": [R(False)]}


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ({"correct": True}, "data_id"),  # which question?
        ({"data_id": "a", "correct": "yes"}, "correct"),  # not a boolean
        ({"data_id": "a", "correct": True, "text_searches": -1}, "text_searches"),  # negative
    ],
)
def test_load_outcomes_errors(tmp_path: Path, record: dict, field: str) -> None:
    path = write_jsonl(tmp_path / "o.jsonl", [{"data_id": "x", "correct": True}, record])
    with pytest.raises(DataError) as info:
        load_outcomes(path)
    assert (info.value.row, info.value.field) == (1, field)


def test_cli_balance(tmp_path: Path) -> None:
    data = write_world(tmp_path / "w.parquet", [world_row(i) for i in range(6)])
    rollouts = []
    for i in range(6):
        outcome = [DIRECT, IMG, TXT, BOTH, WRONG, IMG][i]
        rollouts.append({"data_id": f"world-{i}", "correct": outcome.correct,
                         "image_searches": outcome.image_searches,
                         "text_searches": outcome.text_searches})  # fmt: skip
    outcomes = write_jsonl(tmp_path / "o.jsonl", rollouts)
    out = tmp_path / "balanced.parquet"
    args = ["data", "balance", str(data), str(outcomes), str(out), "--ratio", "0.5"]
    proc = subprocess.run(
        [sys.executable, "-m", "mmsr.cli", *args], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["discarded"] == 1 and summary["labelled"] == 5
    assert (summary["search_free"], summary["search_required"]) == (1, 1)
    back = load_samples(out)
    assert [s.category for s in back].count("search_free") == 1
    assert all("rollouts_correct" in s.extra for s in back)
