"""The one registry of search backends and the builder that turns a plain config into tools.

A config is a plain mapping, e.g. ``{"backend": "local", "index": "DIR", "cache": {...}}``.
``backend`` picks a factory from ``BACKENDS``; ``cache`` (optional) wraps whatever the factory
built in a ``mmsr.search.cache`` cache; every other key belongs to the backend, which rejects
keys it does not know. Factories are imported only when used, so ``mmsr.search`` stays cheap.
"""

from __future__ import annotations

import importlib
import json
import tomllib
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from mmsr.search.base import SearchBackends

# Backend name -> "module:function"; each function is ``build(config) -> SearchBackends``.
BACKENDS: dict[str, str] = {
    "local": "mmsr.search.local:build",
    "fvqa": "mmsr.search.fvqa:build",
    "web": "mmsr.search.web:build",
    "http": "mmsr.search.http_client:build",
}


def load_factory(name: str) -> Callable[[Mapping[str, Any]], SearchBackends]:
    """The ``build`` function registered under ``name`` (imported now)."""
    if name not in BACKENDS:
        known = ", ".join(sorted(BACKENDS))
        raise ValueError(f"unknown search backend {name!r}; known backends: {known}")
    module_name, _, func_name = BACKENDS[name].partition(":")
    factory: Callable[[Mapping[str, Any]], SearchBackends] = getattr(
        importlib.import_module(module_name), func_name
    )
    return factory


def check_keys(
    config: Mapping[str, Any],
    *,
    where: str,
    required: Collection[str] = (),
    optional: Collection[str] = (),
) -> None:
    """Raise ``ValueError`` naming ``where`` when ``config`` lacks or has unexpected keys."""
    missing = [key for key in required if key not in config]
    if missing:
        raise ValueError(f"{where}: missing config key(s): {', '.join(missing)}")
    allowed = set(required) | set(optional)
    unknown = sorted(str(key) for key in config if key not in allowed)
    if unknown:
        expected = ", ".join(sorted(allowed)) or "none"
        raise ValueError(
            f"{where}: unknown config key(s): {', '.join(unknown)} (expected: {expected})"
        )


def build_search(config: Mapping[str, Any]) -> SearchBackends:
    """Build the image and text tools a config asks for, cached when it has a ``cache`` key."""
    if not isinstance(config, Mapping):
        raise ValueError(f"search config must be a mapping, got {type(config).__name__}")
    if "backend" not in config:
        raise ValueError(
            "search config: missing key 'backend' (one of: " + ", ".join(BACKENDS) + ")"
        )
    rest = {key: value for key, value in config.items() if key not in ("backend", "cache")}
    name = str(config["backend"])
    backends = load_factory(name)(rest)
    cache_config = config.get("cache")
    if cache_config is None:
        return backends
    from mmsr.search.cache import build_cache, wrap_backends

    cache = build_cache(cache_config)
    return wrap_backends(backends, cache, namespace=_namespace(name, rest))


def _namespace(name: str, rest: Mapping[str, Any]) -> str:
    """What keeps two backends' entries apart in one cache store (never a secret: no keys)."""
    for key in ("index", "path", "url"):
        if key in rest:
            return f"{name}:{rest[key]}"
    return name


def load_search_config(path: str | Path) -> dict[str, Any]:
    """A backend config from a ``.json`` or ``.toml`` file."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".toml":
        config: Any = tomllib.loads(text)
    elif path.suffix == ".json":
        config = json.loads(text)
    else:
        raise ValueError(f"{path}: config must be .json or .toml")
    if not isinstance(config, dict):
        raise ValueError(f"{path}: config must be an object/table")
    return config


def search_config_from_spec(spec: str) -> dict[str, Any]:
    """A config from a command-line spec: ``local:INDEX_DIR``, ``http:URL``, ``none`` or a
    ``.json``/``.toml`` config file."""
    kind, sep, rest = spec.partition(":")
    if spec == "none":
        return {}
    if sep and kind == "local":
        return {"backend": "local", "index": rest}
    if sep and kind == "http":
        return {"backend": "http", "url": rest}
    if Path(spec).suffix in (".json", ".toml"):
        return load_search_config(spec)
    raise ValueError(
        f"search spec {spec!r}: expected local:INDEX_DIR, http:URL, none or a config file"
    )
