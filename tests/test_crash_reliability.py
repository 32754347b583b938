"""Runs that crash, collide or run out of disk: two runs on one folder, a kill mid-write of a
sample dump or of ``metrics.jsonl``, a damaged newest checkpoint, a checkpoint write that fails.
Each time the run says what happened in one line and a resume carries on from what is intact."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tiny_models
import torch
from _data_builders import world_row, write_world
from test_grpo_train import _config, _metrics, _params, _parts
from test_grpo_train import synthetic_reward as synthetic_reward  # the fixture

from mmsr.cli import main
from mmsr.eval.loop import TRAJECTORIES, read_results
from mmsr.models import build_tiny_model
from mmsr.run_folder import RunFolderBusy, hold_run_folder
from mmsr.train import checkpoint
from mmsr.train.checkpoint import CheckpointWriteError, list_checkpoints, save_checkpoint
from mmsr.train.grpo import train_grpo
from mmsr.train.metrics import MetricsWriter

SAMPLES = Path("samples/step_000002/trajectories.jsonl")


@contextlib.contextmanager
def held_elsewhere(folder: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding ``folder`` (as a run does) until the block ends."""
    code = (
        "import sys; from pathlib import Path; from mmsr.run_folder import hold_run_folder\n"
        "with hold_run_folder(Path(sys.argv[1])):\n"
        "    print('held', flush=True); sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(folder)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def _eval_args(data: Path, out: Path) -> list[str]:
    args = ["eval", "--policy", "scripted:top-title", "--method", "direct", "--data", str(data)]
    return [*args, "--search", "none", "--out", str(out), "--no-progress", "--batch-size", "2"]


# --- 1. one run per folder; a question counts once ---


def test_a_second_eval_on_a_held_folder_is_refused_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_world(tmp_path / "test.parquet", [world_row(i) for i in range(4)])
    out = tmp_path / "run"
    with held_elsewhere(out) as holder:
        assert main(_eval_args(data, out)) == 1
    (error,) = [line for line in capsys.readouterr().err.splitlines() if "mmsr: error" in line]
    assert error == (
        f"mmsr: error: {out} is in use: another run holds it (process {holder.pid}); wait for "
        "it to end or use another --out"
    )
    assert not (out / TRAJECTORIES).exists() and not (out / "config.json").exists()
    assert main(_eval_args(data, out)) == 0  # the holder is gone (killed): the lock went too


def test_a_second_grpo_run_on_a_held_folder_is_refused_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    with held_elsewhere(out):
        # the command line refuses before it loads a model; train_grpo itself refuses too
        assert main(["train", "grpo", "--out", str(out), "--run.progress=false"]) == 1
        with pytest.raises(RunFolderBusy, match="another run holds it"):
            train_grpo(_config("--run.steps=1"), _parts(), out)
    assert f"mmsr: error: {out} is in use: another run holds it" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [".lock"]  # nothing else written


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    with held_elsewhere(tmp_path) as holder:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        with hold_run_folder(tmp_path), hold_run_folder(tmp_path):  # re-entrant in a process
            pass


def test_resume_counts_each_question_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = write_world(tmp_path / "test.parquet", [world_row(i) for i in range(4)])
    out = tmp_path / "run"
    assert main(_eval_args(data, out)) == 0
    # what two runs at once left before runs took the lock: every question written twice
    path = out / TRAJECTORIES
    path.write_bytes(path.read_bytes() * 2)
    assert main(_eval_args(data, out)) == 0
    run = json.loads((out / "metrics.json").read_text(encoding="utf-8"))["run"]
    assert run["n_done"] == run["n_samples"] == 4
    assert sorted(line.id for line in read_results(path)) == [f"world-{i}" for i in range(4)]
    assert f"{path}: ignoring 4 repeated lines" in caplog.text


# --- 2. and 4. a kill mid-write of a sample dump or of metrics.jsonl ---


def test_a_redone_step_replaces_its_sample_dump(tmp_path: Path, synthetic_reward: None) -> None:
    train_grpo(_config("--run.steps=2"), _parts(), tmp_path)
    first = (tmp_path / SAMPLES).read_text(encoding="utf-8")
    # killed after step 2's dump, before its checkpoint, and again in the middle of a dump
    shutil.rmtree(tmp_path / "checkpoints" / "step_000002")
    (tmp_path / "samples" / ".tmp-step_000002").mkdir()
    (tmp_path / "samples" / ".tmp-step_000002" / "trajectories.jsonl").write_text('{"id": "q')
    torch.manual_seed(99)
    train_grpo(_config("--run.steps=2"), _parts(), tmp_path, resume=True)
    lines = (tmp_path / SAMPLES).read_text(encoding="utf-8").splitlines()
    assert len(lines) == 6  # 2 prompts × 3 rollouts, once
    assert lines == first.splitlines()  # the same step redone exactly
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == [
        "step_000001",
        "step_000002",
    ]


def test_resume_drops_a_metrics_line_cut_mid_write(
    tmp_path: Path, synthetic_reward: None, caplog: pytest.LogCaptureFixture
) -> None:
    train_grpo(_config("--run.steps=2"), _parts(), tmp_path)
    before = _metrics(tmp_path)
    with (tmp_path / "metrics.jsonl").open("a", encoding="utf-8") as f:
        f.write('{"step": 3, "reward/mean": 0.2')  # killed while writing step 3's line
    train_grpo(_config("--run.steps=3"), _parts(), tmp_path, resume=True)
    rows = _metrics(tmp_path)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert rows[:2] == before  # the finished lines are kept as they were
    assert f"{tmp_path / 'metrics.jsonl'}: dropping a line cut off" in caplog.text


def test_a_damaged_metrics_line_before_the_last_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2, "lo\n{"step": 3}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=rf"^{path}: line 2 is not JSON \(.*\)$"):
        MetricsWriter(tmp_path).truncate_after(3)
    path.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "lo', encoding="utf-8")
    MetricsWriter(tmp_path).truncate_after(1)
    assert path.read_text(encoding="utf-8") == '{"step": 1}\n'


# --- 5. a damaged newest checkpoint ---


def _cut(path: Path) -> None:
    """Cut a file to half its size, as a kill or a full disk mid-write would."""
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size // 2)


@pytest.mark.parametrize("damaged", ["model/model.safetensors", "trainer.pt"])
def test_resume_skips_a_damaged_newest_checkpoint(
    tmp_path: Path, synthetic_reward: None, caplog: pytest.LogCaptureFixture, damaged: str
) -> None:
    straight = _parts()
    train_grpo(_config("--run.steps=3"), straight, tmp_path / "straight")
    run = tmp_path / "run"
    train_grpo(_config("--run.steps=2"), _parts(), run)
    _cut(run / "checkpoints" / "step_000002" / damaged)
    caplog.set_level(logging.INFO, logger="mmsr.train")
    resumed = _parts()
    train_grpo(_config("--run.steps=3"), resumed, run, resume=True)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith(f"skipping damaged checkpoint {run / 'checkpoints/step_000002'}: ")
    assert "\n" not in warning
    assert f"resumed from {run / 'checkpoints/step_000001'} (step 1)" in caplog.text
    assert [r["step"] for r in _metrics(run)] == [1, 2, 3]
    expected, got = _params(straight.model), _params(resumed.model)
    for key, value in expected.items():
        assert torch.equal(value, got[key]), key  # steps 2 and 3 redone exactly


def test_resume_without_an_intact_checkpoint_is_a_one_line_error(
    tmp_path: Path, synthetic_reward: None
) -> None:
    train_grpo(_config("--run.steps=1"), _parts(), tmp_path)
    _cut(tmp_path / "checkpoints" / "step_000001" / "trainer.pt")
    with pytest.raises(ValueError) as caught:
        train_grpo(_config("--run.steps=2"), _parts(), tmp_path, resume=True)
    message = str(caught.value)
    assert message.startswith(
        f"no intact checkpoint in {tmp_path / 'checkpoints'} to resume from: step_000001 ("
    )
    assert "\n" not in message


# --- 6. a checkpoint write that fails ---


@pytest.mark.parametrize(
    ("target", "error"),
    [
        # torch.save's C++ stream on a full disk
        ("torch.save", RuntimeError("basic_ios::clear: iostream error")),
        # Python's own write of a model file
        ("save_pretrained", OSError(errno.ENOSPC, "No space left on device")),
    ],
)
def test_a_checkpoint_that_cannot_be_written_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str, error: Exception
) -> None:
    tok = tiny_models.tokenizer()
    parts: dict[str, Any] = {
        "model": build_tiny_model("micro", tok, seed=0),
        "tokenizer": tok,
        "image_processor": tiny_models.image_processor("micro"),
        "trainer_state": {"optimizer": {}},
    }
    root = tmp_path / "checkpoints"
    previous = save_checkpoint(root, 1, **parts)

    def full_disk(*_: Any, **__: Any) -> None:
        raise error

    monkeypatch.setattr(
        torch if target == "torch.save" else checkpoint, target.split(".")[-1], full_disk
    )
    with pytest.raises(CheckpointWriteError) as caught:
        save_checkpoint(root, 2, **parts)
    assert isinstance(caught.value, OSError)  # the command line's one-line error
    assert str(caught.value) == (
        f"could not write checkpoint step 2 into {root} (disk full or not writable?): "
        f"{type(error).__name__}: {error}; the previous checkpoint {previous} is intact"
    )
    assert sorted(p.name for p in root.iterdir()) == ["step_000001"]  # no temporary left
    assert list_checkpoints(root) == [previous]
    assert checkpoint.load_trainer_state(previous)["step"] == 1
