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
