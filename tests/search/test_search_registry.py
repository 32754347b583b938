"""The backend registry and ``build_search``: config errors are clear ``ConfigError``s.

Each config dataclass (keys, types, defaults) is tested in ``test_search_configs``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mmsr.config import ConfigError
from mmsr.search.base import SearchBackends
from mmsr.search.cache import CachedTextSearch
from mmsr.search.registry import (
    BACKENDS,
    build_search,
    load_config_class,
    load_factory,
    parse_search_config,
)

BAD_CONFIGS: list[tuple[Any, str]] = [
    # not a mapping at all
    (["local"], "must be a mapping"),
    # no backend named
    ({"index": "x"}, "missing key 'backend'"),
    # a backend nobody registered
    ({"backend": "bing"}, "unknown search backend 'bing'"),
    # local without its index
    ({"backend": "local"}, "local search backend: missing config key(s) index"),
    # a key the local backend does not know
    ({"backend": "local", "index": "x", "colour": "red"}, "unknown config key(s) colour; known:"),
    # the index folder is not an index
    ({"backend": "local", "index": "/nonexistent/idx"}, "not a search index"),
]


@pytest.mark.parametrize(("config", "message"), BAD_CONFIGS)
def test_bad_configs_raise_value_error(config: Any, message: str) -> None:
    with pytest.raises(ValueError) as info:  # config mistakes are ConfigErrors, a ValueError
        build_search(config)
    assert message in str(info.value)


def test_bad_cache_mode_is_named(local_index: Path) -> None:
    config = {"backend": "local", "index": str(local_index), "cache": {"mode": "sometimes"}}
    with pytest.raises(ConfigError, match="search cache: mode: 'sometimes' is not one of"):
        build_search(config)


def test_local_backend_builds_both_tools(local_index: Path) -> None:
    backends = build_search({"backend": "local", "index": str(local_index)})
    assert isinstance(backends, SearchBackends)
    assert backends.image is not None and backends.text is not None


def test_cache_key_wraps_the_tools(local_index: Path, tmp_path: Path) -> None:
    cache = {"mode": "read-write", "path": str(tmp_path / "c.sqlite")}
    backends = build_search({"backend": "local", "index": str(local_index), "cache": cache})
    assert isinstance(backends.text, CachedTextSearch)
    assert (tmp_path / "c.sqlite").is_file()


def test_a_cache_section_keeps_the_namespace_of_the_backend(local_index: Path) -> None:
    # entries of two indexes never meet in one store: the namespace names the index
    config = {"backend": "local", "index": str(local_index), "cache": {"store": "memory"}}
    backends = build_search(parse_search_config(config))
    assert isinstance(backends.text, CachedTextSearch)
    assert backends.text.namespace.startswith(f"local:{local_index}#")


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_every_registered_backend_resolves(name: str) -> None:
    module = BACKENDS[name].factory.partition(":")[0]
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not in this checkout (another engineer's part)")
    assert dataclasses.is_dataclass(load_config_class(name))
    assert callable(load_factory(name))


def test_building_the_search_tools_does_not_import_torch(local_index: Path) -> None:
    code = (
        "import sys, mmsr.search, mmsr.search.cache, mmsr.search.fvqa.convert\n"
        "from mmsr.search.registry import build_search\n"
        f"tools = build_search({{'backend': 'local', 'index': {str(local_index)!r}}})\n"
        "tools.text.search('zebra', 2)\n"
        "assert tools.image is not None\n"
        "print('torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def _other(value: object) -> object:
    """A different value of the same type (for a namespace test)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value * 2 + 1
    if isinstance(value, str):
        return value + "-other"
    if isinstance(value, tuple | list):
        return type(value)([*value, "other"])
    return None


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_every_option_of_every_backend_changes_the_cache_namespace(
    name: str, local_index: Path
) -> None:
    # a cache must never answer for a config that would have answered differently
    import copy

    from mmsr.search.registry import SearchConfig, _namespace

    module = BACKENDS[name].factory.partition(":")[0]
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not in this checkout")
    cls = load_config_class(name)
    required = {"index": str(local_index), "path": "/data/fvqa", "url": "http://127.0.0.1:1"}
    fields = dataclasses.fields(cls)
    base = cls(**{f.name: required[f.name] for f in fields if f.name in required
                  and f.default is dataclasses.MISSING})  # fmt: skip
    reference = _namespace(SearchConfig(name, base))
    checked = 0
    for field in fields:
        if any(word in field.name.lower() for word in ("key", "token", "secret")):
            continue  # the names of secrets' variables: never in a namespace
        changed = _other(getattr(base, field.name))
        if changed is None:
            continue
        options = copy.copy(base)
        object.__setattr__(options, field.name, changed)  # no validation: only the digest
        assert _namespace(SearchConfig(name, options)) != reference, field.name
        checked += 1
    assert checked >= 1
