"""The one registry of search backends and the builder that turns a plain config into tools.

A search config is a plain mapping, e.g. ``{"backend": "local", "index": "DIR", "cache": {...}}``
(from code, or a JSON/TOML file). ``backend`` picks an entry of ``BACKENDS``; every other key
but ``cache`` builds that backend's frozen config dataclass, and ``cache`` (optional) builds a
``CacheConfig`` whose cache then wraps whatever the backend's factory made. Both are built by
``mmsr.config.build``, so an unknown key or a wrong type is a ``ConfigError`` naming it.
``preset`` (for backends that have presets) starts from a named set of keys; the config's own
keys override it. ``{"backend": "composite", "image": {...}, "text": {...}, "cache": {...}}``
takes each tool from its own backend config, both behind the one cache.
Backend modules are imported only when used, so ``mmsr.search`` stays cheap.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmsr.config import ConfigError, build, read_json
from mmsr.search.base import SearchBackends
from mmsr.search.cache import (
    CacheConfig,
    CachedImageSearch,
    CachedTextSearch,
    open_cache,
    wrap_backends,
)


@dataclass(frozen=True)
class Backend:
    """Where one backend lives, as ``module:name`` (imported when the backend is used)."""

    config: str
    """Its frozen config dataclass, built from the search config's keys."""
    factory: str
    """``factory(config) -> SearchBackends``."""
    tools: frozenset[str] = frozenset({"image", "text"})
    """The tools it can serve."""
    presets: str | None = None
    """Its named presets, a dict of name -> keys (None: it has none)."""


BACKENDS: dict[str, Backend] = {
    "local": Backend("mmsr.search.local:LocalConfig", "mmsr.search.local:build_local"),
    "fvqa": Backend(
        "mmsr.search.fvqa:FvqaConfig", "mmsr.search.fvqa:build_fvqa", frozenset({"image"})
    ),
    "web": Backend(
        "mmsr.search.web.config:WebConfig",
        "mmsr.search.web:build_web",
        presets="mmsr.search.web.config:PRESETS",
    ),
    "http": Backend(
        "mmsr.search.service.client:HttpConfig", "mmsr.search.service.client:build_http"
    ),
}
COMPOSITE = "composite"
TOOLS = ("image", "text")
# What makes a backend build only the tool it serves in a composite config (no keys needed
# for the other one).
ONE_TOOL_KEYS: dict[str, dict[str, dict[str, str]]] = {
    "web": {"image": {"text_engine": "none"}, "text": {"image_engine": "none"}},
}


@dataclass(frozen=True)
class SearchConfig:
    """A checked search config: the backend, its own config, and the cache around it."""

    backend: str
    """A name in ``BACKENDS``."""
    options: Any
    """The backend's config dataclass (``LocalConfig``, ``WebConfig``, ...)."""
    cache: CacheConfig | None = None
    """The cache that wraps the tools; None: no cache."""


@dataclass(frozen=True)
class CompositeOptions:
    """The two parts of a composite config, each a checked config without a cache."""

    image: SearchConfig
    """The backend that serves the image tool."""
    text: SearchConfig
    """The backend that serves the text tool."""


def _entry(name: str) -> Backend:
    if name not in BACKENDS:
        known = ", ".join(sorted(BACKENDS))
        raise ConfigError(f"unknown search backend {name!r}; known backends: {known}")
    return BACKENDS[name]


def _load(target: str) -> Any:
    module_name, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


def load_config_class(name: str) -> type[Any]:
    """The config dataclass of the backend registered under ``name`` (imported now)."""
    config_class: type[Any] = _load(_entry(name).config)
    return config_class


def load_factory(name: str) -> Callable[[Any], SearchBackends]:
    """The factory of the backend registered under ``name`` (imported now)."""
    factory: Callable[[Any], SearchBackends] = _load(_entry(name).factory)
    return factory


def _checked(cls: type[Any], data: Any, what: str) -> Any:
    """``build(cls, data)`` with its errors saying which part of the search config failed."""
    try:
        return build(cls, data)
    except ConfigError as err:
        raise ConfigError(f"{what}: {err}") from err


def parse_search_config(config: Mapping[str, Any]) -> SearchConfig:
    """The checked ``SearchConfig`` of a plain one; builds nothing, opens no file."""
    if not isinstance(config, Mapping):
        raise ConfigError(f"search config must be a mapping, got {type(config).__name__}")
    if "backend" not in config:
        known = ", ".join([*BACKENDS, COMPOSITE])
        raise ConfigError(f"search config: missing key 'backend' (one of: {known})")
    name = str(config["backend"])
    section = config.get("cache")
    cache = None if section is None else _checked(CacheConfig, section, "search cache")
    if name == COMPOSITE:
        return SearchConfig(backend=name, options=_composite(config), cache=cache)
    rest = {key: value for key, value in config.items() if key not in ("backend", "cache")}
    options = _checked(load_config_class(name), with_preset(name, rest), f"{name} search backend")
    return SearchConfig(backend=name, options=options, cache=cache)


def with_preset(name: str, keys: Mapping[str, Any]) -> dict[str, Any]:
    """``keys`` over the preset they name (``preset``, kept as a key); unchanged without one."""
    if "preset" not in keys:
        return dict(keys)
    entry = _entry(name)
    presets: dict[str, dict[str, Any]] = _load(entry.presets) if entry.presets else {}
    preset = keys["preset"]
    if preset not in presets:
        known = ", ".join(sorted(presets)) or "none"
        raise ConfigError(f"{name} search backend: unknown preset {preset!r}; presets: {known}")
    return {**presets[preset], **keys}


def _composite(config: Mapping[str, Any]) -> CompositeOptions:
    unknown = sorted(set(config) - {"backend", "cache", *TOOLS})
    if unknown:
        raise ConfigError(
            f"composite search config: unknown key(s) {', '.join(unknown)} "
            "(it takes backend, image, text and cache)"
        )
    return CompositeOptions(**{tool: _part(config, tool) for tool in TOOLS})


def _part(config: Mapping[str, Any], tool: str) -> SearchConfig:
    """One tool's part of a composite config, checked and set to build only that tool."""
    where = f"composite search config, {tool!r}"
    part = config.get(tool)
    if not isinstance(part, Mapping) or "backend" not in part:
        raise ConfigError(f"{where}: expected a backend config such as {{'backend': ...}}")
    name = str(part["backend"])
    if name == COMPOSITE:
        raise ConfigError(f"{where}: a composite config cannot hold another")
    if "cache" in part:
        raise ConfigError(f"{where}: put 'cache' at the top level; one cache serves both tools")
    if tool not in _entry(name).tools:
        able = ", ".join(n for n, b in BACKENDS.items() if tool in b.tools)
        raise ConfigError(f"{where}: the {name} backend has no {tool} search (use one of: {able})")
    own = {key: value for key, value in part.items() if key != "backend"}
    only = ONE_TOOL_KEYS.get(name, {}).get(tool, {})
    for key, value in only.items():
        if own.get(key, value) != value:
            raise ConfigError(
                f"{where}: the {name} backend serves only the {tool} tool here; drop {key!r}"
            )
    keys = {**with_preset(name, own), **only}  # over a preset's value for the other tool
    return parse_search_config({"backend": name, **keys})


def build_search(config: Mapping[str, Any] | SearchConfig) -> SearchBackends:
    """Build the image and text tools a config asks for, cached when it has a ``cache``."""
    if not isinstance(config, SearchConfig):
        config = parse_search_config(config)
    if isinstance(config.options, CompositeOptions):
        return _build_composite(config.options, config.cache)
    backends = load_factory(config.backend)(config.options)
    if config.cache is None:
        return backends
    return wrap_backends(backends, open_cache(config.cache), namespace=_namespace(config))


def _build_composite(parts: CompositeOptions, cache_config: CacheConfig | None) -> SearchBackends:
    image = load_factory(parts.image.backend)(parts.image.options).image
    text = load_factory(parts.text.backend)(parts.text.options).text
    for tool, built in (("image", image), ("text", text)):
        if built is None:
            raise ConfigError(f"composite search config: its {tool!r} part built no {tool} tool")
    assert image is not None and text is not None  # checked just above
    if cache_config is None:
        return SearchBackends(image=image, text=text)
    cache = open_cache(cache_config)
    return SearchBackends(
        image=CachedImageSearch(image, cache, namespace=_namespace(parts.image)),
        text=CachedTextSearch(text, cache, namespace=_namespace(parts.text)),
    )


def resolved_search_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with every preset spelt out (composite parts too, with the keys that keep
    each part to its tool): what a run saves, so that the values it searched with are on
    record, not only a preset's name."""
    name = str(config.get("backend", ""))
    if name == COMPOSITE:
        out = dict(config)
        for tool in TOOLS:
            part = config.get(tool)
            if isinstance(part, Mapping):
                only = ONE_TOOL_KEYS.get(str(part.get("backend")), {}).get(tool, {})
                out[tool] = {**resolved_search_config(part), **only}
        return out
    if name not in BACKENDS:
        return dict(config)
    keys = with_preset(name, {k: v for k, v in config.items() if k != "backend"})
    return {"backend": name, **keys}


def _namespace(config: SearchConfig) -> str:
    """What keeps two backends' entries apart in one cache store (never a secret: no keys).

    The backend and its index, path or url, then a digest of every option (fields named like
    a key, token or secret left out) and, for an index or results folder, of its
    ``manifest.json``: a cache recorded with one image engine, colour weight or summary length
    never answers for another, nor for the same index folder rebuilt from another corpus."""
    base = config.backend
    for key in ("index", "path", "url"):
        value = getattr(config.options, key, None)
        if value is not None:
            base = f"{config.backend}:{value}"
            break
    options: dict[str, Any] = {}
    if dataclasses.is_dataclass(config.options) and not isinstance(config.options, type):
        options = {
            name: value
            for name, value in dataclasses.asdict(config.options).items()
            if not any(word in name.lower() for word in ("key", "token", "secret"))
        }
    folder = getattr(config.options, "index", None) or getattr(config.options, "path", None)
    manifest = Path(str(folder)) / "manifest.json" if folder is not None else None
    identity = manifest.read_text(encoding="utf-8") if manifest and manifest.is_file() else ""
    # A file an option names (a prompt) counts by its content, not its name.
    files = {
        name: hashlib.sha256(Path(value).read_bytes()).hexdigest()
        for name, value in options.items()
        if name.endswith("_file") and isinstance(value, str) and value and Path(value).is_file()
    }
    material = json.dumps([options, identity, files], sort_keys=True, default=str)
    return f"{base}#{hashlib.sha256(material.encode('utf-8')).hexdigest()[:16]}"


def load_search_config(path: str | Path) -> dict[str, Any]:
    """A backend config from a ``.json`` or ``.toml`` file; a ``ValueError`` naming the file
    when it is not readable as one (bad syntax, not UTF-8, nested deeper than a parser
    recurses)."""
    path = Path(path)
    if path.suffix == ".json":
        config: Any = read_json(path)
    elif path.suffix == ".toml":
        try:
            config = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError) as err:
            problem = "nested too deeply" if isinstance(err, RecursionError) else str(err)
            raise ValueError(f"{path}: not valid TOML ({problem})") from None
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
        return resolved_search_config(load_search_config(spec))
    raise ValueError(
        f"search spec {spec!r}: expected local:INDEX_DIR, http:URL, none or a config file"
    )
