"""The ``mmsr`` command in a subprocess, as a user runs it, and the import-cost rule."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def _mmsr(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mmsr.cli", *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=120,
        check=False,
    )


def test_help_lists_commands() -> None:
    out = _mmsr("--help")
    assert out.returncode == 0
    for command in ("prompts", "parse", "reward", "walkthrough", "demo"):
        assert command in out.stdout


def test_walkthrough_prints_the_reward_table() -> None:
    out = _mmsr("walkthrough")
    assert out.returncode == 0, out.stderr
    assert "image_search → text_search → answer" in out.stdout
    assert "0.91" in out.stdout and "1.00" in out.stdout


def test_parse_from_stdin() -> None:
    out = _mmsr("parse", "-", stdin="<reason>r</reason><text_search>Eiffel Tower</text_search>")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {
        "query": "Eiffel Tower",
        "kind": "text_search",
        "well_formed": True,
    }


def test_reward_file(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    rows = [
        {"turns": ["<reason>r</reason><answer>Paris</answer>"], "golds": ["Paris"]},
        {
            "turns": [
                "<reason>r</reason><search><img></search>",
                "<reason>r</reason><answer>Paris</answer>",
            ],
            "golds": "Paris",
        },
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    out = _mmsr("reward", str(path))
    assert out.returncode == 0, out.stderr
    scores = [json.loads(line)["score"] for line in out.stdout.splitlines()]
    assert scores == pytest.approx([1.0, 0.91])
    assert "mean reward 0.9550" in out.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json\n", "t.jsonl:1: not JSON"),  # broken line
        ('{"turns": []}\n', "t.jsonl:1: expected an object with turns and golds"),  # missing field
    ],
)
def test_reward_file_errors_name_the_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(content, encoding="utf-8")
    out = _mmsr("reward", str(path))
    assert out.returncode == 1
    assert message in out.stderr


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    out = _mmsr("reward", str(tmp_path / "missing.jsonl"))
    assert out.returncode == 1 and "missing.jsonl" in out.stderr


def test_prompts_from_a_folder(tmp_path: Path) -> None:
    out = _mmsr("prompts", "--dir", str(tmp_path))
    assert out.returncode == 1 and "no text for first_turn" in out.stderr


@pytest.mark.parametrize(
    "module",
    [
        "mmsr",
        "mmsr.types",
        "mmsr.protocol",
        "mmsr.rewards",
        "mmsr.cli",
        "mmsr.chat_client",
        "mmsr.policy",
        "mmsr.rollout",
        "mmsr.inspect.app",
    ],
)
def test_core_modules_do_not_import_torch(module: str) -> None:
    heavy = "('torch', 'transformers')"
    code = f"import sys, {module}; assert not any(m in sys.modules for m in {heavy})"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr


def test_run_returns_the_exit_code_and_raises_errors(capsys: pytest.CaptureFixture[str]) -> None:
    from mmsr.cli import run
    from mmsr.config import ConfigError

    assert run(["world"]) == 2  # a group without a command: its help
    with pytest.raises(ConfigError, match="batch_size must be at least 1"):  # not caught
        argv = ["eval", "--policy", "scripted:abstain", "--method", "direct", "--data", "x"]
        run([*argv, "--out", "o", "--batch-size", "0"])
