"""Dependencies point one way: training and the protocol never reach into eval, and
the protocol never imports torch — checked on what importing them loads and on their sources."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import mmsr

ROOT = Path(mmsr.__file__).parent

# package -> top-level modules that none of its modules may import, directly or through others
FORBIDDEN = {
    "mmsr.protocol": ("mmsr.eval", "torch", "transformers"),
    "mmsr.train": ("mmsr.eval",),
}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_importing_every_module_loads_nothing_forbidden(package: str) -> None:
    code = (
        "import importlib, pkgutil, sys\n"
        f"pkg = importlib.import_module({package!r})\n"
        "for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "    importlib.import_module(info.name)\n"
        f"forbidden = {FORBIDDEN[package]!r}\n"
        "bad = sorted(m for m in sys.modules\n"
        "             if any(m == f or m.startswith(f + '.') for f in forbidden))\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]", out.stdout


def _imported_names(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_source_imports_something_forbidden_even_lazily(package: str) -> None:
    folder = ROOT / package.removeprefix("mmsr.").replace(".", "/")
    offenders = {}
    for path in sorted(folder.rglob("*.py")):
        bad = {
            name
            for name in _imported_names(path)
            for f in FORBIDDEN[package]
            if name == f or name.startswith(f + ".")
        }
        if bad:
            offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert offenders == {}


VERL_ONLY = ("verl", "ray", "hydra", "omegaconf")


def test_only_the_verl_integration_imports_verl() -> None:
    allowed = ROOT / "integrations" / "verl"
    offenders = {}
    for path in sorted(ROOT.rglob("*.py")):
        if allowed in path.parents:
            continue
        bad = {
            n for n in _imported_names(path) for f in VERL_ONLY if n == f or n.startswith(f + ".")
        }
        if bad:
            offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert offenders == {}


def test_the_cli_and_the_verl_free_modules_load_no_verl() -> None:
    code = (
        "import sys, mmsr.cli\n"
        "mmsr.cli.build_parser()\n"
        "import mmsr.integrations.verl.episode, mmsr.integrations.verl.reward\n"
        "import mmsr.integrations.verl.launch\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {VERL_ONLY!r}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]", out.stdout
