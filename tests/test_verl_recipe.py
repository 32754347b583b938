"""``mmsr train verl --recipe paper``: the paper's values, each printed with its source by
``--dry-run`` (no verl needed), the user's overrides still winning, and veRL's defaults that
would break a run (the v1 trainer, a gsm8k validation path) replaced."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mmsr.integrations.verl.launch import (
    PAPER_LIMITS,
    VerlRun,
    merged_overrides,
    resolved_overrides,
)


def _sources(run: VerlRun) -> dict[str, tuple[str, str]]:
    return {o.split("=", 1)[0]: (o.split("=", 1)[1], s) for o, s in resolved_overrides(run)}


def test_paper_recipe_values_and_sources(tmp_path: Path) -> None:
    paper = _sources(VerlRun("t.parquet", "m", tmp_path, recipe="paper"))
    assert paper["data.train_batch_size"] == ("512", "paper recipe (paper: 512 prompts per step)")
    assert paper["actor_rollout_ref.rollout.n"][0] == "8"
    assert paper["actor_rollout_ref.actor.ppo_mini_batch_size"][0] == "128"
    assert paper["actor_rollout_ref.actor.entropy_coeff"][0] == "0"
    for key in ("optim.lr", "kl_loss_coef", "clip_ratio"):
        assert paper[f"actor_rollout_ref.actor.{key}"][1].startswith("paper recipe (release")
    # mmsr's recipe leaves veRL's mini-batch alone and names itself as the source
    ours = _sources(VerlRun("t.parquet", "m", tmp_path))
    assert "actor_rollout_ref.actor.ppo_mini_batch_size" not in ours
    assert ours["data.train_batch_size"] == ("512", "mmsr default")
    with pytest.raises(ValueError, match="unknown recipe"):
        VerlRun("t.parquet", "m", tmp_path, recipe="papr")


def test_user_overrides_win_over_the_paper_recipe(tmp_path: Path) -> None:
    run = VerlRun(
        "t.parquet",
        "m",
        tmp_path,
        recipe="paper",
        overrides=("actor_rollout_ref.actor.ppo_mini_batch_size=64",),
    )
    assert _sources(run)["actor_rollout_ref.actor.ppo_mini_batch_size"] == ("64", "user override")
    keys = [o.split("=", 1)[0] for o in merged_overrides(run)]
    assert len(keys) == len(set(keys))  # one value per key


def test_v1_trainer_off_and_no_gsm8k_validation(tmp_path: Path) -> None:
    data = tmp_path / "t.parquet"
    values = _sources(VerlRun(str(data), "m", tmp_path))
    assert values["++trainer.use_v1"][0] == "False"
    # without --val, veRL's default validation path must not stay
    assert values["data.val_files"][0] == str(data.resolve())
    assert values["trainer.val_before_train"][0] == "False"
    val = tmp_path / "v.parquet"
    assert _sources(VerlRun(str(data), "m", tmp_path, val=str(val)))["data.val_files"] == (
        str(val.resolve()),
        "command option",
    )


def test_dry_run_prints_the_paper_recipe_with_sources(tmp_path: Path) -> None:
    data = tmp_path / "train.parquet"
    data.write_bytes(b"")  # a dry run checks that the file exists, never reads it
    command = [sys.executable, "-m", "mmsr.cli", "train", "verl", "--recipe", "paper"]
    command += ["--dry-run", "--data", str(data), "--model", "/models/qwen"]
    command += ["--out", str(tmp_path / "run"), "trainer.save_freq=10"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()

    def line(key: str) -> str:
        (found,) = [x for x in lines if x.lstrip("# ").startswith(key + "=")]
        return found

    assert "<- paper recipe (paper: PPO mini-batch 128)" in line(
        "actor_rollout_ref.actor.ppo_mini_batch_size"
    )
    assert "=512 " in line("data.train_batch_size") and "paper: 512" in line(
        "data.train_batch_size"
    )
    assert "=8 " in line("actor_rollout_ref.rollout.n") and "paper recipe" in line(
        "actor_rollout_ref.rollout.n"
    )
    assert "<- user override" in line("trainer.save_freq")
    assert "<- command option" in line("actor_rollout_ref.model.path")
    # the schedule: its values and where they were read, and that veRL cannot run it
    (schedule,) = [x for x in lines if x.startswith("#") and "schedule:" in x]
    assert "lr_sigmoid_decay_warmup_steps=45" in schedule and "ratio=0.95" in schedule
    assert (
        "#   max_turns=3" in lines and f"#   max_new_tokens={PAPER_LIMITS.max_new_tokens}" in lines
    )
    assert not (tmp_path / "run").exists()  # a dry run writes nothing
