"""``mmsr --help`` stays fast: building the parser and every command's help loads no model
library (torch and transformers alone take seconds to import), and every help still prints."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "vllm", "peft", "matplotlib", "fastapi", "tantivy")

# Walks the whole command tree in one process and formats each parser's help, as
# ``mmsr … --help`` does; prints how many helps it made, then the heavy modules loaded.
_WALK = """
import argparse, sys
import mmsr.cli

def walk(parser):
    assert parser.format_help().startswith("usage: mmsr")
    count = 1
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            count += sum(walk(sub) for sub in action.choices.values())
    return count

print(walk(mmsr.cli.build_parser()))
print(sorted({m.split(".")[0] for m in sys.modules} & set(%r)))
"""


def test_every_help_loads_no_model_library() -> None:
    code = _WALK % (HEAVY,)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    count, heavy = out.stdout.strip().splitlines()
    assert int(count) > 20  # the groups and their subcommands were all walked
    assert heavy == "[]"


def _commands() -> list[str]:
    from mmsr.cli import build_parser

    parser = build_parser()
    (group,) = [a for a in parser._actions if a.dest == "command"]
    return sorted(group.choices)  # type: ignore[arg-type]


@pytest.mark.parametrize("command", _commands())
def test_each_command_prints_its_help(command: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mmsr.cli", command, "--help"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith(f"usage: mmsr {command}")


def test_the_sft_help_lists_the_presets_without_loading_torch() -> None:
    from mmsr.train.preset_files import preset_names

    code = (
        "import sys, contextlib, io, mmsr.cli\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):\n"
        "    mmsr.cli.build_parser().parse_args(['train', 'sft', '--help'])\n"
        "print(' '.join(out.getvalue().split()))\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    help_text, torch_loaded = out.stdout.strip().splitlines()
    names = preset_names("sft")
    assert names and all(name in help_text for name in names)
    assert torch_loaded == "False"
