"""Search a local index: BM25 text search with extractive summaries, exact image search
(the image engine's embeddings, ``engine.py``, or pretrained features' cosine plus
colour-histogram intersection, ``colors.py``).

Both searchers open a folder written by ``index.build_index`` and are safe to share between
threads. The image encoder (torch) is loaded on the first image search, not before.
Not here: building the index (``index.py``).
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any

import numpy as np

from mmsr.search.base import SearchError
from mmsr.search.local.colors import DEFAULT_COLOR_WEIGHT, color_histogram, intersection
from mmsr.search.local.index import TEXT_FIELDS, read_manifest
from mmsr.search.local.summary import summarize
from mmsr.types import ImageHit, TextHit

# The query language's operators and quotes are not for the model to use: keep words only.
_NON_WORD = re.compile(r"[^\w]+", re.UNICODE)
TITLE_BOOST = 2.0
# A model may write a whole paragraph as its query; BM25 over the first words is enough and
# keeps a runaway query from costing seconds.
MAX_QUERY_WORDS = 32


def _check_k(k: int) -> None:
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")


class LocalTextSearch:
    """BM25 over titles and texts (titles weigh double); summaries cut from the page, their
    sentences ordered as the index's manifest says (``summary_order``)."""

    def __init__(self, index: str | Path, *, summary_chars: int = 500) -> None:
        import tantivy

        self.summary_order = read_manifest(index).summary_order
        self._index = tantivy.Index.open(str(Path(index) / "text"))
        self._searcher = self._index.searcher()
        self.summary_chars = summary_chars

    def search(self, query: str, k: int, question: str | None = None) -> list[TextHit]:
        _check_k(k)
        words = _NON_WORD.sub(" ", query).lower().split()[:MAX_QUERY_WORDS]
        if not words:
            return []
        try:
            parsed = self._index.parse_query(
                " ".join(words), list(TEXT_FIELDS), field_boosts={"title": TITLE_BOOST}
            )
            found = self._searcher.search(parsed, k).hits
        except ValueError as err:
            raise SearchError(f"local text search failed: {err}", tool="text") from err
        hits = []
        for _score, address in found:
            doc = self._searcher.doc(address)
            text = doc["text"][0]
            summary = summarize(
                text, query, question, max_chars=self.summary_chars, order=self.summary_order
            )
            hits.append(TextHit(title=doc["title"][0], url=doc["url"][0], summary=summary))
        return hits


class LocalImageSearch:
    """Exact scores of every indexed picture against the query image, best page first.

    With an image engine (the index's ``engine/``), a picture scores the cosine of the two
    embeddings; with ``efficientnet-color``, the pretrained features' cosine plus
    ``color_weight`` times the colour histograms' intersection. A page scores its best
    picture's score, and each page is returned once."""

    def __init__(self, index: str | Path, *, color_weight: float = DEFAULT_COLOR_WEIGHT) -> None:
        self.folder = Path(index)
        self.manifest = read_manifest(self.folder)
        self.features = np.load(self.folder / "images.npy")  # (N, D), unit rows
        self.colors = np.load(self.folder / "colors.npy").astype(np.float32)  # (N, 1728)
        self.engine = self.manifest.image_model == "engine"
        self.color_weight = 0.0 if self.engine else color_weight
        with (self.folder / "images.jsonl").open(encoding="utf-8") as handle:
            self.rows = [json.loads(line) for line in handle]
        if not len(self.rows) == len(self.features) == len(self.colors):
            raise ValueError(
                f"{index}: images.jsonl, images.npy and colors.npy disagree; rebuild the index"
            )
        pages: dict[str, int] = {}
        self.page_of_row = np.array(
            [pages.setdefault(row["id"], len(pages)) for row in self.rows], dtype=np.int64
        )
        # each page's first row is its hit (pages are numbered in order of first appearance)
        self.page_rows: list[int] = np.unique(self.page_of_row, return_index=True)[1].tolist()
        self._encoder: Any = None
        self._lock = threading.Lock()

    def _load_encoder(self) -> Any:
        with self._lock:
            if self._encoder is None:
                if self.engine:
                    from mmsr.search.local.engine import Engine

                    self._encoder = Engine(self.folder / "engine")
                else:
                    from mmsr.search.local.features import ImageEncoder

                    self._encoder = ImageEncoder()
            return self._encoder

    def _encode(self, image: Any) -> tuple[np.ndarray, np.ndarray | None]:
        encoder = self._load_encoder()
        try:
            feature: np.ndarray = encoder.encode([image])[0]
            histogram = color_histogram(image) if self.color_weight else None
        except (AttributeError, OSError, ValueError, TypeError) as err:
            raise SearchError(f"could not read the query image: {err}", tool="image") from err
        return feature, histogram

    def nearest(
        self, feature: np.ndarray, k: int, histogram: np.ndarray | None = None
    ) -> list[int]:
        """Rows of the ``k`` best-scoring pages (each page's first row), best first (ties:
        lower page first); without ``histogram``, by the features alone."""
        scores = self.features @ feature  # (N,)
        if histogram is not None and self.color_weight:
            scores = scores + self.color_weight * intersection(self.colors, histogram)
        best = np.full(len(self.page_rows), -np.inf, dtype=np.float64)
        np.maximum.at(best, self.page_of_row, scores)
        k = min(k, len(best))
        if k == 0:
            return []
        top = np.argpartition(-best, k - 1)[:k]
        pages = sorted(top.tolist(), key=lambda page: (-float(best[page]), page))
        return [self.page_rows[page] for page in pages]

    def search(self, image: Any, k: int) -> list[ImageHit]:
        _check_k(k)
        feature, histogram = self._encode(image)
        rows = self.nearest(feature, k, histogram)
        return [self._hit(row) for row in rows]

    def _hit(self, row: int) -> ImageHit:
        from PIL import Image

        meta = self.rows[row]
        with Image.open(self.folder / meta["thumbnail"]) as thumb:
            thumb.load()
            return ImageHit(title=meta["title"], url=meta["url"], thumbnail=thumb.copy())
