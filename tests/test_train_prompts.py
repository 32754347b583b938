"""Training with another prompt set: ``--prompts DIR`` reaches the GRPO rollouts and the SFT
teacher's conversations, and is saved with the run's config."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_grpo_train import OVERRIDES, _parts

from mmsr.config import ConfigError, config_to_dict
from mmsr.protocol.prompts import DEFAULT_DIR, PromptSetError
from mmsr.train import sft
from mmsr.train.grpo import train_grpo
from mmsr.train.grpo_config import load_grpo_config
from mmsr.train.sft import SFTConfig, load_sft_config, train_sft

MARK = "Zebra rules apply."


@pytest.fixture
def prompt_dir(tmp_path: Path) -> Path:
    """Our prompt set with a marked first turn (what a user's own folder would be)."""
    folder = tmp_path / "my-prompts"
    shutil.copytree(DEFAULT_DIR, folder)
    first = folder / "first_turn.txt"
    first.write_text(MARK + "\n" + first.read_text(encoding="utf-8"), encoding="utf-8")
    return folder


def test_grpo_rollouts_are_rendered_with_the_configs_prompt_set(
    prompt_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    cfg = load_grpo_config("tiny-cpu", [*OVERRIDES, "--run.steps=1", "--prompts", str(prompt_dir)])
    assert cfg.prompts == str(prompt_dir)
    train_grpo(cfg, _parts(kl=False), out)
    dumped = (out / "samples" / "step_000001" / "trajectories.jsonl").read_text()
    firsts = [json.loads(line)["turns"][0] for line in dumped.splitlines()]
    assert firsts and all(t["role"] == "user" and t["text"].startswith(MARK) for t in firsts)
    # the setting is saved with the run and read back
    assert yaml.safe_load((out / "config.yaml").read_text())["prompts"] == str(prompt_dir)
    assert load_grpo_config(str(out / "config.yaml")) == cfg


def test_grpo_default_is_ours_and_a_bad_folder_is_an_error(tmp_path: Path) -> None:
    assert load_grpo_config("tiny-cpu").prompts == ""
    out = tmp_path / "run"
    cfg = load_grpo_config("tiny-cpu", [*OVERRIDES, "--run.steps=1"])
    train_grpo(cfg, _parts(kl=False), out)
    dumped = (out / "samples" / "step_000001" / "trajectories.jsonl").read_text()
    first = json.loads(dumped.splitlines()[0])["turns"][0]["text"]
    assert first.startswith((DEFAULT_DIR / "first_turn.txt").read_text()[:40])
    bad = load_grpo_config("tiny-cpu", [*OVERRIDES, "--prompts", str(tmp_path / "nope")])
    with pytest.raises(PromptSetError, match="not a folder"):
        train_grpo(bad, _parts(kl=False), tmp_path / "bad")


def test_grpo_cli_takes_prompts(prompt_dir: Path) -> None:
    command = [sys.executable, "-m", "mmsr.cli", "train", "grpo", "--print-config"]
    command += ["--prompts", f"release-layout:{prompt_dir}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert yaml.safe_load(done.stdout)["prompts"] == f"release-layout:{prompt_dir}"


class _Stop(Exception):
    pass


def test_sft_teacher_conversations_use_the_configs_prompt_set(
    small_world: Any, prompt_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world, index = small_world
    config = load_sft_config("smoke", overrides=["--prompts", str(prompt_dir)])
    assert config.prompts == str(prompt_dir)
    teachers: list[Any] = []

    def first_batch_only(encoder: Any, turns: Any) -> Any:
        raise _Stop  # the run's teacher is built; what it draws is all this test needs

    class Recorded(sft.Teacher):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            teachers.append(self)

    monkeypatch.setattr(sft, "teacher_sequence", first_batch_only)
    monkeypatch.setattr(sft, "Teacher", Recorded)
    with pytest.raises(_Stop):
        train_sft(config, world, index, tmp_path / "warm")
    (teacher,) = teachers
    # a conversation that opens with the question: its first turn is the folder's
    for kind in ("head", "tail", "decide_full"):
        assert teacher.draw(kind)[0].text.startswith(MARK), kind


def test_sft_prompts_default_and_old_configs(prompt_dir: Path) -> None:
    assert SFTConfig().prompts == load_sft_config("smoke").prompts == ""
    # a config saved before the field existed still loads, with today's prompts
    saved = config_to_dict(load_sft_config("smoke"))
    del saved["prompts"]
    assert load_sft_config(None, saved).prompts == ""
    with pytest.raises(ConfigError, match="prompts"):
        load_sft_config("smoke", overrides=["--prompts", "[1, 2]"])
