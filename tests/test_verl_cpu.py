"""veRL's real trainer on the CPU: the position-id fix, and one GRPO step of the tiny policy
with mmsr's agent loop, search and reward.

Skipped without the ``verl`` extra. The end-to-end run carries the ``verl`` marker (deselected
by default; ``make test-verl`` runs it): it starts Ray and veRL's ``main_ppo`` in a subprocess,
about two minutes on two cores.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("verl", reason="needs the verl extra: pip install mmsr[verl]")

import torch
from tensordict import TensorDict

from mmsr.integrations.verl.launch import ROLLOUT_DUMP, SYNC_LOG
from mmsr.integrations.verl.reward import SCORE_KEYS


def _padded_batch(lengths: list[int], width: int = 6) -> TensorDict:
    """veRL's left-right padded batch with (4, L) M-RoPE position ids: ``lengths`` valid ids
    per row, left-aligned, as the rollout produces it."""
    rows = len(lengths)
    mask = torch.zeros(rows, width, dtype=torch.int64)
    positions = torch.zeros(rows, 4, width, dtype=torch.int64)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
        positions[i, :, :n] = torch.arange(n) + 100 * i  # row i's own values
    return TensorDict(
        {
            "input_ids": torch.arange(rows * width).reshape(rows, width),
            "attention_mask": mask,
            "response_mask": mask[:, 2:],
            "position_ids": positions,
        },
        batch_size=[rows],
    )


@pytest.mark.parametrize("lengths", [[4, 4], [4, 4, 4, 4], [3, 5]])
def test_no_padding_keeps_each_rows_mrope_ids_with_equal_lengths(lengths: list[int]) -> None:
    from verl.utils.tensordict_utils import maybe_fix_3d_position_ids
    from verl.workers.utils import padding

    import mmsr.integrations.verl.fixes  # noqa: F401  (installs the fix)

    assert getattr(padding.left_right_2_no_padding, "mmsr_fixed", False)
    data = padding.left_right_2_no_padding(_padded_batch(lengths))
    # what veRL does between the driver and the workers: pickle, then its own repair
    data = pickle.loads(pickle.dumps(data))
    maybe_fix_3d_position_ids(data)
    nested = data["position_ids"]
    assert nested._ragged_idx == 2
    assert nested.offsets().tolist() == [sum(lengths[:i]) for i in range(len(lengths) + 1)]
    for i, (row, n) in enumerate(zip(nested.unbind(), lengths, strict=True)):
        assert tuple(row.shape) == (4, n)
        assert row[0].tolist() == [100 * i + k for k in range(n)]


def test_torch_nests_equal_lengths_on_the_wrong_dimension() -> None:
    """Why the fix exists: with equal lengths torch makes the rope axes ragged."""
    rows = [torch.zeros(4, 3), torch.ones(4, 3)]
    plain = torch.nested.as_nested_tensor(rows, layout=torch.jagged)
    assert plain._ragged_idx == 1 and plain.offsets().tolist() == [0, 4, 8]
    from mmsr.integrations.verl.fixes import nest_positions

    fixed = nest_positions(rows)
    assert fixed._ragged_idx == 2 and fixed.offsets().tolist() == [0, 3, 6]


@pytest.fixture(scope="module")
def verl_train_file(
    small_world: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Two questions of the small world, exported for veRL."""
    out = tmp_path_factory.mktemp("verl_data") / "train.parquet"
    command = [sys.executable, "-m", "mmsr.cli", "data", "export-verl", "--image-token"]
    command += ["<image>", "--limit", "2", str(small_world[0] / "train.parquet"), str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return out


@pytest.mark.verl
def test_one_real_grpo_step_on_the_cpu(
    verl_train_file: Path, small_world: tuple[Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    command = [sys.executable, "-m", "mmsr.cli", "train", "verl", "--device", "cpu"]
    command += ["--steps", "1", "--data", str(verl_train_file), "--out", str(out)]
    command += ["--search", f"local:{small_world[1]}"]
    # 6 rollouts per question: a group whose rewards all agree has no advantage, and a step
    # whose groups all agree changes no weight
    command += ["actor_rollout_ref.rollout.n=6"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        log, _ = process.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the run and the Ray processes it started
        log, _ = process.communicate()
        pytest.fail(f"the veRL run took over 10 minutes:\n{log[-4000:]}")
    assert process.returncode == 0, log[-6000:]

    # veRL's console logger: step 1 with the GRPO update's metrics
    (line,) = [ln for ln in log.splitlines() if "step:1 - " in ln]
    metrics = dict(
        item.split(":", 1) for item in line.split("step:1 - ", 1)[1].split(" - ") if ":" in item
    )
    for key in ("actor/pg_loss", "actor/grad_norm", "critic/score/mean", "timing_s/step"):
        assert key in metrics, sorted(metrics)
    assert "critic/advantages/max" in metrics

    # the actor's weights reached the rollout server: once before training, once after step 1
    syncs = [json.loads(s) for s in (out / SYNC_LOG).read_text().splitlines()]
    assert [s["step"] for s in syncs][-1] == 1
    assert syncs[-1]["abs_change"] > 0 and syncs[-1]["tensors"] > 0

    # veRL's rollout dump holds mmsr's reward terms for every trajectory
    rows = [json.loads(r) for r in (out / ROLLOUT_DUMP / "1.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 6
    for row in rows:
        assert set(SCORE_KEYS) <= set(row), sorted(row)
        assert row["end_reason"]
