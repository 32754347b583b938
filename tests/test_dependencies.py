"""Dependencies point one way: every module sits in a layer and imports nothing of a layer above
it (``LAYERS``, read from the sources, lazy imports and modules loaded by name included);
training and the protocol never reach into eval, and the protocol never imports torch — checked
on what importing them loads and on their sources."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Callable
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


# The layers, lowest first. A module may import modules of its own layer and of the layers
# below, never of a layer above, lazily inside a function included. A module is in the layer of
# the longest name here that is it or a package holding it (``mmsr`` holds only its own
# ``__init__``: a new module or package must be placed here). No exemptions: a command lives in
# the package of the highest layer it needs, and only ``mmsr.cli``, the top, names command
# modules of any layer.
LAYERS: tuple[tuple[str, ...], ...] = (
    # the kit every layer uses: records, configs, secrets, run folders, shipped files, the
    # client of chat APIs, shared argparse types
    (
        "mmsr",
        "mmsr.assets",
        "mmsr.chat_client",
        "mmsr.cli_types",
        "mmsr.config",
        "mmsr.redact",
        "mmsr.run_folder",
        "mmsr.types",
    ),
    ("mmsr.protocol",),
    ("mmsr.rewards",),  # the reward reads the protocol's action syntax
    ("mmsr.models", "mmsr.search"),
    ("mmsr.policy",),  # local policies run the models
    ("mmsr.rollout",),  # a policy, the search tools, the protocol and the reward
    ("mmsr.data",),  # balancing rolls a policy out
    ("mmsr.world",),  # writes a search corpus and questions in the datasets' schema
    ("mmsr.teacher",),  # draws conversations from the world and its index
    ("mmsr.train",),  # trains on the teacher's conversations
    ("mmsr.inspect",),  # reads run folders by their file formats alone
    ("mmsr.eval",),  # its report links to the inspector
    ("mmsr.demo", "mmsr.integrations", "mmsr.warmstart"),  # drive training and evaluation
    ("mmsr.cli",),  # the ``mmsr`` command: gathers every command module
)


def _module_files() -> dict[str, Path]:
    """Every module of the package by dotted name (``mmsr.eval.run``; a package by its own)."""
    modules = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


MODULES = _module_files()


def _layer(module: str) -> int | None:
    """The index in ``LAYERS`` of ``module``'s layer (its longest matching name), or None."""
    found: tuple[int, int] | None = None  # (length of the name, layer)
    for index, names in enumerate(LAYERS):
        for name in names:
            holds = module == name or (name != "mmsr" and module.startswith(name + "."))
            if holds and (found is None or len(name) > found[0]):
                found = (len(name), index)
    return None if found is None else found[1]


def _mmsr_imports(source: str, module: str, is_package: bool = False) -> set[str]:
    """The mmsr modules a source imports anywhere (module level, in functions, under
    ``TYPE_CHECKING``): ``from mmsr.x import y`` counts as ``mmsr.x.y`` when that is a module,
    and relative imports are resolved against ``module``."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            name = node.module or ""
            if node.level > 0:  # ``from . import x`` in mmsr.train.grpo: mmsr.train.x
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                name = ".".join([*parts, name] if name else parts)
            found.add(name)
            found.update(f"{name}.{a.name}" for a in node.names if f"{name}.{a.name}" in MODULES)
    return {name for name in found if name == "mmsr" or name.startswith("mmsr.")}


def _modules_named_in_strings(source: str) -> set[str]:
    """The mmsr modules a source names in a string to load them at run time: a module's exact
    dotted name (``importlib.import_module``) or ``module:attribute`` (the search registry)."""
    named = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            name = node.value.partition(":")[0]
            if name in MODULES:
                named.add(name)
    return named


def test_the_readers_see_lazy_relative_and_by_name_imports() -> None:
    source = (
        "from mmsr import demo, types\n"
        "def f():\n"
        "    import mmsr.eval.run\n"
        "    from . import sft\n"
        "    importlib.import_module('mmsr.warmstart.cli')\n"
        "    return 'mmsr.search.local:build_local'\n"
    )
    assert _mmsr_imports(source, "mmsr.train.grpo") == {
        "mmsr",
        "mmsr.demo",
        "mmsr.types",
        "mmsr.eval.run",
        "mmsr.train",
        "mmsr.train.sft",
    }
    assert _modules_named_in_strings(source) == {"mmsr.warmstart.cli", "mmsr.search.local"}
    assert _layer("mmsr.train.sft") == _layer("mmsr.train") < _layer("mmsr.eval.run")
    assert _layer("mmsr") == _layer("mmsr.chat_client") == 0
    assert _layer("mmsr.cli") == len(LAYERS) - 1 and _layer("mmsr.cli_types") == 0
    assert _layer("mmsr.unplaced") is None


def test_every_module_sits_in_exactly_one_layer() -> None:
    names = [name for layer in LAYERS for name in layer]
    assert len(names) == len(set(names))
    assert all(name in MODULES for name in names), sorted(set(names) - set(MODULES))
    assert sorted(m for m in MODULES if _layer(m) is None) == []


def _upward(read: Callable[[str, str, bool], set[str]]) -> dict[str, list[str]]:
    """``module -> the modules of higher layers it reaches`` by ``read(source, module, is_pkg)``."""
    offenders = {}
    for module, path in sorted(MODULES.items()):
        own = _layer(module)
        assert own is not None, module
        source = path.read_text(encoding="utf-8")
        reached = {name: _layer(name) for name in read(source, module, path.name == "__init__.py")}
        higher = [
            f"{name} (layer {layer} > {own})"
            for name, layer in sorted(reached.items())
            if layer is None or layer > own
        ]
        if higher:
            offenders[module] = higher
    return offenders


def test_no_module_imports_a_higher_layer_even_lazily() -> None:
    assert _upward(_mmsr_imports) == {}


def test_no_module_loads_a_higher_layer_by_name() -> None:
    assert _upward(lambda source, module, is_package: _modules_named_in_strings(source)) == {}
