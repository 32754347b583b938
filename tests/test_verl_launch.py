"""``mmsr train verl``: the paper's overrides, the agent-loop file and the --dry-run
composition with veRL's own Hydra schema (that last part skipped without the verl extra)."""

from __future__ import annotations

import importlib.util
import io
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from PIL import Image

from mmsr.cli import run as run_cli
from mmsr.data.export import write_verl_parquet
from mmsr.integrations.verl.launch import (
    RAY_TEMP_DIR,
    VerlRun,
    agent_loop_entries,
    merged_overrides,
)
from mmsr.types import Sample

HAS_VERL = importlib.util.find_spec("verl") is not None


def _parquet(tmp_path: Path) -> Path:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 0, 0)).save(buf, format="PNG")
    samples = [
        Sample(f"q{i}", "Which country's flag is this?", "France", ("FR",), buf.getvalue())
        for i in range(2)
    ]
    path = tmp_path / "train.parquet"
    write_verl_parquet(samples, path, image_token="<image>")
    return path


def _values(overrides: list[str]) -> dict[str, str]:
    return dict(o.split("=", 1) for o in overrides)


def test_paper_recipe_and_user_overrides_win(tmp_path: Path) -> None:
    run = VerlRun(
        data="train.parquet",
        model="/models/qwen",
        out=tmp_path,
        nodes=4,
        overrides=("actor_rollout_ref.actor.optim.lr=1e-6", "+trainer.extra=1"),
    )
    values = _values(merged_overrides(run))
    assert values["algorithm.adv_estimator"] == "grpo"
    assert values["actor_rollout_ref.rollout.n"] == "8"
    assert values["actor_rollout_ref.actor.kl_loss_coef"] == "0.001"
    assert values["actor_rollout_ref.actor.kl_loss_type"] == "low_var_kl"
    assert values["actor_rollout_ref.actor.clip_ratio"] == "0.2"
    assert values["trainer.nnodes"] == "4"
    assert values["reward.custom_reward_function.path"] == "pkg://mmsr.integrations.verl.reward"
    # the user's value replaces the paper's, once
    assert values["actor_rollout_ref.actor.optim.lr"] == "1e-6"
    assert (
        sum(o.startswith("actor_rollout_ref.actor.optim.lr=") for o in merged_overrides(run)) == 1
    )
    assert values["+trainer.extra"] == "1"
    with pytest.raises(ValueError, match="key=value"):
        merged_overrides(VerlRun("d", "m", tmp_path, overrides=("--oops",)))


def test_agent_loop_entry_names_the_loop() -> None:
    (entry,) = agent_loop_entries(VerlRun("d", "m", Path("out"), search="http:http://s:8000"))
    assert entry["name"] == "mmsr_search" and entry["search"] == "http:http://s:8000"
    module, _, name = entry["_target_"].rpartition(".")
    assert module == "mmsr.integrations.verl.agent_loop" and name == "MmsrSearchAgentLoop"
    if HAS_VERL:
        from mmsr.integrations.verl import agent_loop

        assert hasattr(agent_loop, name)


@pytest.mark.skipif(HAS_VERL, reason="checks the message shown without the verl extra")
def test_without_verl_the_command_says_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"mmsr\[verl\]"):
        run_cli(["train", "verl", "--data", "x.parquet", "--model", "m"])


@pytest.mark.skipif(not HAS_VERL, reason="needs the verl extra (pip install mmsr[verl])")
def test_dry_run_composes_verls_config(tmp_path: Path) -> None:
    data = _parquet(tmp_path)
    command = [sys.executable, "-m", "mmsr.cli", "train", "verl", "--dry-run"]
    command += ["--data", str(data), "--model", "/models/qwen", "--out", str(tmp_path / "run")]
    command += ["--nodes", "2", "--gpus-per-node", "4", "trainer.total_training_steps=10"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load(done.stdout)
    actor = config["actor_rollout_ref"]["actor"]
    assert actor["use_kl_loss"] is True and actor["optim"]["lr"] == 2e-6
    agent = config["actor_rollout_ref"]["rollout"]["agent"]
    assert agent["default_agent_loop"] == "mmsr_search"
    assert agent["agent_loop_config_path"] == str(tmp_path / "run" / "agent_loops.yaml")
    assert config["algorithm"]["adv_estimator"] == "grpo"
    assert config["trainer"]["nnodes"] == 2 and config["trainer"]["n_gpus_per_node"] == 4
    assert config["trainer"]["total_training_steps"] == 10
    assert config["data"]["train_files"] == str(data)
    # veRL's schema filled in everything else (its trainer reads hundreds of keys)
    assert len(done.stdout.splitlines()) > 500
    assert not (tmp_path / "run").exists()  # a dry run writes nothing


def test_cpu_overrides_and_the_fixes_of_both_paths(tmp_path: Path) -> None:
    env = "+ray_kwargs.ray_init.runtime_env.env_vars."
    cpu = _values(merged_overrides(VerlRun("d.parquet", "m", tmp_path, device="cpu", steps=3)))
    assert cpu["actor_rollout_ref.rollout.name"] == "mmsr_cpu"
    assert cpu["actor_rollout_ref.actor.strategy"] == "fsdp2"
    assert cpu["+actor_rollout_ref.model.override_config.attn_implementation"] == "sdpa"
    assert cpu["trainer.total_training_steps"] == "3"
    assert cpu["+ray_kwargs.ray_init._temp_dir"] == RAY_TEMP_DIR
    assert len(RAY_TEMP_DIR) < 20  # Ray's unix socket paths grow from it (107-byte limit)
    assert cpu[env + "VERL_USE_EXTERNAL_MODULES"] == "mmsr.integrations.verl.cpu"
    assert cpu[env + "VERL_PLATFORM"] == "mmsr_cpu"
    gpu = _values(merged_overrides(VerlRun("d.parquet", "m", tmp_path)))
    assert gpu["actor_rollout_ref.rollout.name"] == "vllm"
    assert gpu[env + "VERL_USE_EXTERNAL_MODULES"] == "mmsr.integrations.verl.fixes"
    assert env + "VERL_PLATFORM" not in gpu
    for values in (cpu, gpu):
        assert values["++trainer.use_v1"] == "False"  # the v1 trainer imports transfer_queue
        # without --val the training file stands in for veRL's default (a gsm8k path)
        assert values["data.val_files"] == str(Path("d.parquet").resolve())
        assert values["trainer.val_before_train"] == "False"
    with pytest.raises(ValueError, match="device"):
        VerlRun("d", "m", tmp_path, device="tpu")


def test_cpu_run_defaults_to_the_tiny_policy_and_preset(tmp_path: Path) -> None:
    from mmsr.assets import WARMSTART_TINY
    from mmsr.integrations.verl.cli import verl_run

    args = SimpleNamespace(
        data="d.parquet", val=None, model=None, out=tmp_path, nodes=1, gpus_per_node=8,
        search="none", settings=None, recipe="mmsr", device="cpu", steps=2, overrides=[],
    )  # fmt: skip
    run = verl_run(args)  # type: ignore[arg-type]
    assert run.model == str(WARMSTART_TINY) and run.steps == 2
    assert run.limits.max_new_tokens == 48  # the tiny-cpu preset's
    with pytest.raises(ValueError, match="--model"):
        verl_run(SimpleNamespace(**{**vars(args), "device": "gpu"}))  # type: ignore[arg-type]
