"""``mmsr train grpo`` end to end in subprocesses, on a small world and its real local index.

The policy is a random micro model (no warm start), so the real reward is 0 everywhere; what is
checked is the plumbing: world → index → rollouts with real search → metrics, checkpoints, the
resolved config, and a resumed second step.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

MMSR = [sys.executable, "-m", "mmsr.cli"]


def _mmsr(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MMSR, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def world(small_world: tuple[Path, Path], tmp_path: Path) -> Path:
    """A working folder where ``world`` and ``index`` are the session's small world."""
    (tmp_path / "world").symlink_to(small_world[0])
    (tmp_path / "index").symlink_to(small_world[1])
    return tmp_path


RUN = (
    "--model.preset=micro",
    "--model.vocab_size=600",
    "--algo.prompts_per_step=2",
    "--algo.group_size=2",
    "--rollout.max_new_tokens=8",
    "--run.save_every=1",
    "--run.sample_every=1",
    "--run.progress=false",
    "--data.train=world/train.parquet",
    "--search.spec=local:index",
    "--search.cache=cache.sqlite",
)


def test_cli_trains_and_resumes_on_the_world(world: Path) -> None:
    done = _mmsr(
        "train", "grpo", "--preset", "tiny-cpu", "--out", "run", *RUN, "--run.steps=1", cwd=world
    )
    assert done.returncode == 0, done.stderr
    run = world / "run"
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["preset"] == "micro" and saved["run"]["steps"] == 1
    assert (run / "checkpoints" / "step_000001" / "trainer.pt").is_file()
    assert (run / "tensorboard").is_dir() and any((run / "tensorboard").iterdir())
    assert (run / "samples" / "step_000001" / "trajectories.jsonl").is_file()
    done = _mmsr("train", "grpo", "--out", "run", "--resume", *RUN, "--run.steps=2", cwd=world)
    assert done.returncode == 0, done.stderr
    assert "resumed from" in done.stderr
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        assert row["loss/trained_tokens"] > 0
        assert 0 <= row["search/ratio"] <= 1 and row["perf/step_s"] > 0
        assert sum(v for k, v in row.items() if k.startswith("rollout/end/")) == pytest.approx(1)


def test_cli_rejects_unknown_keys(world: Path) -> None:
    done = _mmsr("train", "grpo", "--out", "bad", "--optim.lrr", "1", cwd=world)
    assert done.returncode == 1
    assert "unknown config key(s) optim.lrr" in done.stderr
    assert not (world / "bad").exists()
