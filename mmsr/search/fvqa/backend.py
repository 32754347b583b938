"""Serve FVQA's released image-search results from a folder made by ``convert.py``.

FVQA ships, per question (``data_id``), the hits a real reverse image search returned for the
question's image, so training and evaluation can use them without a paid API. The query is
identified by its ``data_id``: ``search(image, k)`` reads it from ``image.info["data_id"]``
(``mmsr.data.sample_image`` opens a rollout's image with the sample's id there; the FVQA loader
takes the id from the ``data_id`` column), ``search_id(data_id, k)`` takes it directly. A
question the release has no results for is a ``SearchError`` (an observation, not a crash).

Hits whose thumbnail the release gives as a url are fetched when first served, through the
SSRF-guarded client of the web backends, and kept in ``<folder>/fetched/`` (in memory when the
folder is read-only). A url that fails leaves its hit without a thumbnail; ``stats()`` counts
fetched, failed and unfetched thumbnails.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mmsr.search.base import SearchError
from mmsr.search.fvqa.convert import READABLE_FORMATS
from mmsr.types import ImageHit

logger = logging.getLogger(__name__)

DATA_ID_KEY = "data_id"


class FvqaImageSearch:
    """The released hits of one FVQA split, looked up by ``data_id``.

    ``thumbnail_client`` (a guarded ``httpx.Client``) fetches thumbnails given as urls; None:
    such hits are served without a thumbnail."""

    def __init__(self, folder: str | Path, *, thumbnail_client: Any = None) -> None:
        self.folder = Path(folder)
        manifest_path = self.folder / "manifest.json"
        if not manifest_path.is_file():
            raise ValueError(
                f"{folder}: not a converted FVQA results folder (no manifest.json); "
                "run 'mmsr search convert-fvqa-cache PICKLE OUT' first"
            )
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("format") not in READABLE_FORMATS:
            raise ValueError(
                f"{folder}: format {manifest.get('format')}, expected one of "
                f"{sorted(READABLE_FORMATS)}; convert the pickle again"
            )
        self.results: dict[str, list[dict[str, Any]]] = {}
        with (self.folder / "results.jsonl").open(encoding="utf-8") as handle:
            for line in handle:
                row = json.loads(line)
                self.results[row["data_id"]] = row["hits"]
        self.thumbnail_client = thumbnail_client
        self._lock = threading.Lock()
        self._fetched: dict[str, bytes | None] = {}  # url -> PNG, None: failed this process
        self._counts = dict.fromkeys(
            ("thumbnails_fetched", "thumbnails_failed", "thumbnails_not_fetched", "no_results"), 0
        )

    def stats(self) -> dict[str, int]:
        """Counters under ``fvqa/``: thumbnails fetched, failed (dead urls), not fetched (no
        client), and searches for an id without released results."""
        with self._lock:
            return {f"fvqa/{name}": count for name, count in self._counts.items()}

    def search(self, image: Any, k: int) -> list[ImageHit]:
        info = getattr(image, "info", None)
        data_id = info.get(DATA_ID_KEY) if isinstance(info, dict) else None
        if not isinstance(data_id, str):
            raise SearchError(
                "the fvqa image search needs the question's FVQA data_id in image.info['data_id']",
                tool="image",
            )
        return self.search_id(data_id, k)

    def search_id(self, data_id: str, k: int) -> list[ImageHit]:
        """The first ``k`` released hits for ``data_id``."""
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if data_id not in self.results:
            self._count("no_results")
            raise SearchError(
                f"no released image-search results for data_id {data_id!r}: FVQA's results "
                "file has none for this question",
                tool="image",
            )
        rows = self.results[data_id][:k]
        if not any(row.get("thumbnail_url") for row in rows):
            return [self._hit(row) for row in rows]
        with ThreadPoolExecutor(max_workers=min(8, len(rows) or 1)) as pool:
            return list(pool.map(self._hit, rows))

    def _hit(self, row: dict[str, Any]) -> ImageHit:
        from PIL import Image

        thumb = None
        if row.get("thumbnail"):
            with Image.open(self.folder / row["thumbnail"]) as image:
                image.load()
                thumb = image.copy()
        elif row.get("thumbnail_url"):
            png = self._fetch(row["thumbnail_url"])
            if png is not None:
                with Image.open(io.BytesIO(png)) as image:
                    image.load()
                    thumb = image.copy()
        return ImageHit(title=row["title"], url=row.get("url") or "", thumbnail=thumb)

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def _fetch(self, url: str) -> bytes | None:
        """The thumbnail at ``url`` as PNG: from memory, from ``fetched/``, else downloaded."""
        with self._lock:
            if url in self._fetched:
                return self._fetched[url]
        path = self.folder / "fetched" / f"{hashlib.sha256(url.encode()).hexdigest()}.png"
        if path.is_file():
            png: bytes | None = path.read_bytes()
        elif self.thumbnail_client is None:
            self._count("thumbnails_not_fetched")
            return None
        else:
            png = self._download(url)
            if png is not None:
                _write_quietly(path, png)
        with self._lock:
            self._fetched[url] = png
        return png

    def _download(self, url: str) -> bytes | None:
        import httpx

        from mmsr.search import imagecodec
        from mmsr.search.web.guard import BlockedUrl, read_capped
        from mmsr.search.web.image import MAX_THUMBNAIL_BYTES

        try:
            data = read_capped(self.thumbnail_client, url, MAX_THUMBNAIL_BYTES)
            png = imagecodec.thumbnail_png(data)
        except (BlockedUrl, httpx.HTTPError, ValueError) as err:
            logger.debug("fvqa thumbnail not fetched: %s", type(err).__name__)
            self._count("thumbnails_failed")
            return None
        self._count("thumbnails_fetched")
        return png


def _write_quietly(path: Path, data: bytes) -> None:
    """Writes ``path`` atomically; a read-only folder only costs the on-disk copy."""
    try:
        path.parent.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".part")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except OSError as err:
        logger.debug("fvqa thumbnail kept in memory only: %s", err)
