"""``mmsr rollout`` in a subprocess: a saved micro model on a small world with local search."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import tiny_models

from mmsr.models import build_tiny_model, save_pretrained


def _saved_micro_model(folder: Path) -> Path:
    tok = tiny_models.tokenizer()
    model = build_tiny_model("micro", tok, seed=0)
    save_pretrained(model, tok, tiny_models.image_processor("micro"), folder)
    return folder


def test_rollout_cli_writes_trajectories(tmp_path: Path, small_world: tuple[Path, Path]) -> None:
    world, index = small_world
    model_dir = _saved_micro_model(tmp_path / "model")
    out = tmp_path / "out"
    command = [
        *(sys.executable, "-m", "mmsr.cli", "rollout", "--model", str(model_dir)),
        *("--data", str(world / "test.parquet"), "--search", f"local:{index}"),
        *("--out", str(out), "--limit", "3", "--n", "2", "--temperature", "1.0"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["rollouts"] == 6 and sum(summary["end_reasons"].values()) == 6
    records = [json.loads(line) for line in (out / "trajectories.jsonl").read_text().splitlines()]
    assert len(records) == 6 and {r["id"].split("#")[1] for r in records} == {"0", "1"}
    for record in records:
        assert record["n_trained_tokens"] > 0 and 0.0 <= record["reward"]["score"] <= 1.0
        assert record["images"][0] is not None and (out / "images" / record["images"][0]).is_file()


def test_rollout_cli_takes_the_reward_and_limits_of_a_settings_file(
    tmp_path: Path, small_world: tuple[Path, Path]
) -> None:
    world, index = small_world
    model_dir = _saved_micro_model(tmp_path / "model")
    settings = tmp_path / "settings.json"
    sections = {"reward": {"search_penalty": 0.37}, "limits": {"max_turns": 1}}
    settings.write_text(json.dumps(sections))
    out = tmp_path / "out"
    command = [
        *(sys.executable, "-m", "mmsr.cli", "rollout", "--model", str(model_dir)),
        *("--data", str(world / "test.parquet"), "--search", f"local:{index}"),
        *("--out", str(out), "--limit", "2", "--settings", str(settings)),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["reward"]["search_penalty"] == 0.37 and summary["limits"]["max_turns"] == 1
    records = [json.loads(line) for line in (out / "trajectories.jsonl").read_text().splitlines()]
    assert all(sum(t["role"] == "assistant" for t in r["turns"]) <= 1 for r in records)
