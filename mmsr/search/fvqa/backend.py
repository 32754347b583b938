"""Serve FVQA's released image-search results from a folder made by ``convert.py``.

FVQA ships, per question (``data_id``), the hits a real reverse image search returned for the
question's image, so training and evaluation can use them without a paid API. The query is
identified by its ``data_id``: ``search(image, k)`` reads it from ``image.info["data_id"]``
(``mmsr.data.sample_image`` opens a rollout's image with the sample's id there; the FVQA loader
takes the id from the ``data_id`` column), ``search_id(data_id, k)`` takes it directly. A
question the release has no results for is a ``SearchError`` (an observation, not a crash).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mmsr.search.base import SearchError
from mmsr.search.fvqa.convert import FORMAT_VERSION
from mmsr.types import ImageHit

DATA_ID_KEY = "data_id"


class FvqaImageSearch:
    """The released hits of one FVQA split, looked up by ``data_id``."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        manifest_path = self.folder / "manifest.json"
        if not manifest_path.is_file():
            raise ValueError(
                f"{folder}: not a converted FVQA results folder (no manifest.json); "
                "run 'mmsr search convert-fvqa-cache PICKLE OUT' first"
            )
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("format") != FORMAT_VERSION:
            raise ValueError(
                f"{folder}: format {manifest.get('format')}, expected {FORMAT_VERSION}"
            )
        self.results: dict[str, list[dict[str, Any]]] = {}
        with (self.folder / "results.jsonl").open(encoding="utf-8") as handle:
            for line in handle:
                row = json.loads(line)
                self.results[row["data_id"]] = row["hits"]

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
            raise SearchError(f"no released image-search results for {data_id!r}", tool="image")
        return [self._hit(row) for row in self.results[data_id][:k]]

    def _hit(self, row: dict[str, Any]) -> ImageHit:
        from PIL import Image

        thumb = None
        if row.get("thumbnail"):
            with Image.open(self.folder / row["thumbnail"]) as image:
                image.load()
                thumb = image.copy()
        return ImageHit(title=row["title"], url=row.get("url") or "", thumbnail=thumb)
