"""``bench/soak.py``'s phase 3 (kill -9 / resume of ``mmsr train grpo``): its pure checks, and
the phase itself on two steps (slow, off by default)."""

from __future__ import annotations

import doctest
import importlib.util
import json
import math
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _load() -> Any:
    spec = importlib.util.spec_from_file_location("soak_grpo", BENCH / "soak_grpo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


soak_grpo = _load()


@pytest.mark.parametrize(
    ("steps", "planned", "expected"),
    [
        ([1, 2, 3], 3, (0, 0, 0, 0)),  # every step once, in order
        ([1, 3], 3, (1, 0, 0, 0)),  # a lost line
        ([1, 2, 2, 3], 3, (0, 1, 0, 0)),  # a redone step whose old line was kept
        ([1, 2, 3, 4], 3, (0, 0, 1, 0)),  # a step past the plan
        ([2, 1, 3], 3, (0, 0, 0, 1)),  # out of order
        ([], 2, (2, 0, 0, 0)),  # nothing written
    ],
)
def test_step_ledger(steps: list[int], planned: int, expected: tuple[int, ...]) -> None:
    got = soak_grpo.step_ledger(steps, planned)
    assert (got["lost"], got["duplicated"], got["unplanned"], got["out_of_order"]) == expected


def test_docstring_examples() -> None:
    result = doctest.testmod(soak_grpo)
    assert result.attempted > 0 and result.failed == 0


def test_differing_metrics_ignores_timings_only() -> None:
    a = [{"step": 1, "loss/total": 0.5, "perf/step_s": 3.0, "search/latency_s": 0.2}]
    same_but_slower = [{"step": 1, "loss/total": 0.5, "perf/step_s": 9.0, "search/latency_s": 1}]
    assert soak_grpo.differing_metrics(a, same_but_slower) == []
    other_loss = [{"step": 1, "loss/total": 0.50000001, "perf/step_s": 3.0}]
    assert soak_grpo.differing_metrics(a, other_loss) == ["1:loss/total"]
    extra_key = [{**a[0], "reward/mean": 0.1}]
    assert soak_grpo.differing_metrics(a, extra_key) == ["1:reward/mean"]
    assert soak_grpo.differing_metrics(a, []) == ["1:*"]


def test_differing_tensors_is_bit_exact() -> None:
    w = torch.linspace(-1, 1, 5)
    nudged = w.clone()
    nudged[2] = torch.nextafter(nudged[2], torch.tensor(1.0))  # one ulp away
    assert soak_grpo.differing_tensors({"w": w, "b": w}, {"w": w.clone(), "b": w.clone()}) == []
    assert soak_grpo.differing_tensors({"w": w, "b": w}, {"w": nudged, "b": w}) == ["w"]
    assert soak_grpo.differing_tensors({"w": w}, {"w": w, "extra": w}) == ["extra"]


def test_kill_delays_are_seeded_and_bounded() -> None:
    delays = soak_grpo.kill_delays(random.Random(0), 3, startup_s=10.0, train_s=40.0)
    assert delays == soak_grpo.kill_delays(random.Random(0), 3, startup_s=10.0, train_s=40.0)
    assert len(delays) == 3 and all(5.0 <= d <= 10.0 + 2 * 40.0 / 4 for d in delays)
    assert not math.isclose(delays[0], delays[1])


PASSING = {
    "grpo_exit": 0,
    "grpo_steps": 4,
    "grpo_final_step": 4,
    "grpo_resumes": 2,
    "grpo_lost_steps": 0,
    "grpo_duplicated_steps": 0,
    "grpo_unplanned_steps": 0,
    "grpo_out_of_order_steps": 0,
    "grpo_checkpoints": 2,
    "grpo_unloadable": 0,
    "grpo_stale_tmp": 0,
    "grpo_tensors_trained": 80,
    "grpo_tensors_differing": 0,
    "grpo_metrics_differing": 0,
}


@pytest.mark.parametrize(
    "broken",
    [
        {"grpo_exit": 1},  # the last resume crashed
        {"grpo_final_step": 3},  # stopped short of the plan
        {"grpo_resumes": 0},  # no kill landed: nothing was soaked
        {"grpo_lost_steps": 1},
        {"grpo_duplicated_steps": 1},
        {"grpo_unplanned_steps": 1},
        {"grpo_out_of_order_steps": 1},
        {"grpo_checkpoints": 0},
        {"grpo_unloadable": 1},
        {"grpo_stale_tmp": 1},  # a half checkpoint left behind
        {"grpo_tensors_trained": 0},  # weights never moved: the comparison says nothing
        {"grpo_tensors_differing": 1},
        {"grpo_metrics_differing": 1},
    ],
)
def test_grpo_ok_fails_on_each_broken_check(broken: dict[str, int]) -> None:
    assert soak_grpo.grpo_ok(PASSING)
    assert not soak_grpo.grpo_ok({**PASSING, **broken})


def test_unknown_phase_is_refused() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / "soak.py"), "--phases", "grpo,nope"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "--phases" in done.stderr


@pytest.mark.slow
def test_grpo_phase_survives_a_kill() -> None:
    args = ["--phases", "grpo", "--grpo-steps", "2", "--grpo-kills", "1", "--grpo-seconds", "400"]
    done = subprocess.run(
        [sys.executable, str(BENCH / "soak.py"), *args], capture_output=True, text=True, timeout=450
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert done.returncode == 0 and report["grpo_ok"], report
    assert report["phases"] == ["grpo"] and report["grpo_final_step"] == 2
