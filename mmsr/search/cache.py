"""The search cache: layered, with modes, counters, and wrappers that cache whole backends.

``SearchCache`` implements the ``LayerCache`` protocol of ``mmsr.search.base`` over any
``CacheStore`` (SQLite file by default, Redis for a cluster). Modes:

- ``off``: always compute, store nothing;
- ``read-write``: return the stored value, else compute and store it;
- ``record``: always compute and store (refreshes a recording);
- ``replay``: only stored values; a miss raises ``SearchError`` (a frozen web).

Stored keys are the SHA-256 of the layer, a namespace and the caller's key material, so they
never carry a query, a URL or a secret in clear. Values are JSON; image thumbnails are stored
as PNG bytes (base64), never pickled. ``CacheConfig`` is the ``cache`` section of a search
config; ``open_cache`` opens it. Not here: the stores themselves (``cache_stores.py``), nor
reading configs (``mmsr.search.registry``).
"""

from __future__ import annotations

import base64
import enum
import hashlib
import io
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from mmsr.search.base import ImageSearchBackend, SearchBackends, SearchError, TextSearchBackend
from mmsr.search.cache_stores import CacheStore, MemoryStore, RedisStore, SQLiteStore
from mmsr.types import ImageHit, TextHit


class CacheMode(enum.StrEnum):
    """When the cache reads and writes (see the module docstring)."""

    OFF = "off"
    READ_WRITE = "read-write"
    RECORD = "record"
    REPLAY = "replay"


class SearchCache:
    """Named layers of JSON values over one store, with hit/miss/latency counters."""

    def __init__(self, store: CacheStore | None, mode: CacheMode | str = CacheMode.READ_WRITE):
        self.mode = CacheMode(mode)
        if store is None and self.mode is not CacheMode.OFF:
            raise ValueError(f"cache mode {self.mode.value!r} needs a store")
        self.store = store
        self._lock = threading.Lock()
        self._counts: dict[str, float] = {}

    def get_or_compute(self, layer: str, key: str, compute: Callable[[], Any]) -> Any:
        """The stored value for (``layer``, ``key``), or ``compute()``'s, per the mode."""
        if self.mode is CacheMode.OFF or self.store is None:
            return self._timed_compute(layer, compute)
        store_key = entry_key(layer, key)
        if self.mode is not CacheMode.RECORD:
            start = time.perf_counter()
            raw = self.store.get(store_key)
            if raw is not None:
                value = json.loads(raw)
                self._count(layer, "hits", time.perf_counter() - start)
                return value
            if self.mode is CacheMode.REPLAY:
                self._count(layer, "replay_misses", 0.0)
                raise SearchError(
                    f"search cache is in replay mode and has no recorded {layer!r} result for "
                    "this request; record it first (cache mode 'record' or 'read-write')",
                    tool="image" if layer.startswith("image") else "text",
                )
        value = self._timed_compute(layer, compute)
        self.store.put(store_key, json.dumps(value, ensure_ascii=False).encode("utf-8"))
        return value

    def _timed_compute(self, layer: str, compute: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        value = compute()
        self._count(layer, "misses", time.perf_counter() - start)
        return value

    def _count(self, layer: str, outcome: str, seconds: float) -> None:
        with self._lock:
            for scope in ("cache", f"cache/{layer}"):
                self._counts[f"{scope}/{outcome}"] = self._counts.get(f"{scope}/{outcome}", 0) + 1
                name = f"{scope}/{outcome}_seconds"
                self._counts[name] = self._counts.get(name, 0.0) + seconds

    def stats(self) -> dict[str, float]:
        """Counters: ``cache/hits``, ``cache/misses``, their total seconds, the same per layer,
        and ``cache/hit_ms_mean`` / ``cache/miss_ms_mean``."""
        with self._lock:
            out = dict(self._counts)
        for outcome, name in (("hits", "hit"), ("misses", "miss")):
            count = out.get(f"cache/{outcome}", 0)
            seconds = out.get(f"cache/{outcome}_seconds", 0.0)
            out[f"cache/{name}_ms_mean"] = 1000 * seconds / count if count else 0.0
        return out

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


def entry_key(layer: str, key: str) -> str:
    """The stored key: the layer in clear, then a hash of the caller's key material."""
    return f"{layer}:{hashlib.sha256(key.encode('utf-8')).hexdigest()}"


def encode_image_hits(hits: list[ImageHit]) -> list[dict[str, Any]]:
    """JSON-safe image hits; thumbnails become base64 PNG bytes (no pickle)."""
    rows = []
    for hit in hits:
        thumb = None
        if hit.thumbnail is not None:
            buffer = io.BytesIO()
            hit.thumbnail.save(buffer, format="PNG")
            thumb = base64.b64encode(buffer.getvalue()).decode("ascii")
        rows.append({"title": hit.title, "url": hit.url, "thumbnail_png": thumb})
    return rows


def decode_image_hits(rows: list[dict[str, Any]]) -> list[ImageHit]:
    from PIL import Image

    hits = []
    for row in rows:
        thumb = None
        if row.get("thumbnail_png"):
            thumb = Image.open(io.BytesIO(base64.b64decode(row["thumbnail_png"])))
            thumb.load()
        hits.append(ImageHit(title=row["title"], url=row["url"], thumbnail=thumb))
    return hits


class CachedImageSearch:
    """Any image backend behind the cache: (namespace, image digest, k) -> hits."""

    def __init__(self, inner: ImageSearchBackend, cache: SearchCache, namespace: str = "") -> None:
        self.inner = inner
        self.cache = cache
        self.namespace = namespace

    def search(self, image: Any, k: int) -> list[ImageHit]:
        from mmsr.search.imagecodec import image_digest  # Pillow only once an image comes

        try:
            digest = image_digest(image)
        except ValueError as err:
            raise SearchError(str(err), tool="image") from err
        key = json.dumps([self.namespace, digest, k])
        rows = self.cache.get_or_compute(
            "image", key, lambda: encode_image_hits(self.inner.search(image, k))
        )
        return decode_image_hits(rows)


class CachedTextSearch:
    """Any text backend behind the cache: (namespace, query, k, question) -> hits."""

    def __init__(self, inner: TextSearchBackend, cache: SearchCache, namespace: str = "") -> None:
        self.inner = inner
        self.cache = cache
        self.namespace = namespace

    def search(self, query: str, k: int, question: str | None = None) -> list[TextHit]:
        key = json.dumps([self.namespace, query, k, question], ensure_ascii=False)

        def compute() -> list[dict[str, str]]:
            hits = self.inner.search(query, k, question)
            return [{"title": h.title, "url": h.url, "summary": h.summary} for h in hits]

        rows = self.cache.get_or_compute("text", key, compute)
        return [TextHit(title=r["title"], url=r["url"], summary=r["summary"]) for r in rows]


def wrap_backends(backends: SearchBackends, cache: SearchCache, namespace: str) -> SearchBackends:
    """Both tools of ``backends`` behind ``cache`` (a missing tool stays missing)."""
    image = None if backends.image is None else CachedImageSearch(backends.image, cache, namespace)
    text = None if backends.text is None else CachedTextSearch(backends.text, cache, namespace)
    return SearchBackends(image=image, text=text)


@dataclass(frozen=True)
class CacheConfig:
    """The ``cache`` section of a search config (``mmsr.search.registry`` builds it)."""

    mode: Literal["off", "read-write", "record", "replay"] = "read-write"
    """When the cache reads and writes (``CacheMode``)."""
    store: Literal["sqlite", "redis", "memory"] = "sqlite"
    """Where entries live: a SQLite file, a Redis server shared by a cluster, or memory."""
    path: str | None = None
    """The SQLite file (needed by the sqlite store unless the mode is off)."""
    url: str = "redis://127.0.0.1:6379/0"
    """The Redis server of the redis store."""
    prefix: str = "mmsr:search:"
    """Prefix of the redis store's keys."""

    def __post_init__(self) -> None:
        if self.mode != "off" and self.store == "sqlite" and self.path is None:
            raise ValueError("the sqlite store needs 'path' (a file)")


def open_cache(config: CacheConfig) -> SearchCache:
    """The cache ``config`` describes (mode off: no store is opened)."""
    mode = CacheMode(config.mode)
    if mode is CacheMode.OFF:
        return SearchCache(None, mode)
    store: CacheStore
    if config.store == "sqlite":
        assert config.path is not None  # CacheConfig checks it
        store = SQLiteStore(config.path)
    elif config.store == "redis":
        store = RedisStore(config.url, prefix=config.prefix)
    else:
        store = MemoryStore()
    return SearchCache(store, mode)
