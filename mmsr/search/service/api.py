"""Request models and the synchronous work behind each endpoint of the search service.

The models bound every field (query length, k, number of queries) and take numbers strictly
(``true`` or ``"5"`` is not a k), so a malformed request is a 422 before any backend runs.
``Handlers`` runs in worker threads: it calls the backends and turns hits into JSON
(thumbnails as base64 PNG). Query images are decoded at most ``max_decodes`` at a time and to
at most ``max_pixels`` pixels (a larger one is 413), so the memory they take stays bounded
under any mix of requests; each is closed once its hits are written. Bad images, refused and
malformed image urls are 400; a missing tool is 404.
"""

from __future__ import annotations

import hashlib
import threading
from typing import Annotated, Any

import httpx
from fastapi import HTTPException
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from mmsr.search import imagecodec
from mmsr.search.base import ImageSearchBackend, SearchBackends, TextSearchBackend
from mmsr.types import ImageHit, TextHit

MAX_K = 50
MAX_QUERIES = 64
MAX_QUERY_CHARS = 2_000
MAX_QUESTION_CHARS = 4_000
MAX_URL_CHARS = 4_096
MAX_IMAGE_BYTES = 20_000_000

K = Annotated[int, Field(ge=1, le=MAX_K, strict=True)]
Query = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_QUERY_CHARS)
]


class TextSearchRequest(BaseModel):
    """``POST /text_search``."""

    model_config = ConfigDict(extra="forbid")
    query: Query
    k: K = 5
    question: str | None = Field(None, max_length=MAX_QUESTION_CHARS)


class ImageSearchRequest(BaseModel):
    """``POST /image_search``: exactly one of ``image_base64`` and ``image_url``."""

    model_config = ConfigDict(extra="forbid")
    image_base64: str | None = None
    image_url: str | None = Field(None, max_length=MAX_URL_CHARS)
    k: K = 5

    @model_validator(mode="after")
    def _one_image(self) -> ImageSearchRequest:
        if (self.image_base64 is None) == (self.image_url is None):
            raise ValueError("give exactly one of image_base64 and image_url")
        return self


class RetrieveRequest(BaseModel):
    """``POST /retrieve`` as the Search-R1 retriever takes it; unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")
    queries: list[Query] | None = Field(None, min_length=1, max_length=MAX_QUERIES)
    query: Query | None = None
    topk: K = 3
    return_scores: bool = Field(True, strict=True)

    @model_validator(mode="after")
    def _one_form(self) -> RetrieveRequest:
        if (self.queries is None) == (self.query is None):
            raise ValueError("give exactly one of queries and query")
        return self

    def all_queries(self) -> list[str]:
        return list(self.queries) if self.queries is not None else [str(self.query)]


def text_hit_json(hit: TextHit) -> dict[str, str]:
    return {"title": hit.title, "url": hit.url, "summary": hit.summary}


def image_hit_json(hit: ImageHit) -> dict[str, Any]:
    thumb = hit.thumbnail
    encoded = imagecodec.to_base64(thumb, "PNG") if hasattr(thumb, "save") else None
    return {"title": hit.title, "url": hit.url, "thumbnail_base64": encoded}


def retrieve_document(hit: TextHit, rank: int) -> dict[str, Any]:
    """A Search-R1 passage: ``contents`` is the quoted title, a newline, then the text."""
    doc_id = hashlib.sha1(hit.url.encode(), usedforsecurity=False).hexdigest()[:16]
    contents = f'"{hit.title}"\n{hit.summary}'
    document = {"id": doc_id, "title": hit.title, "url": hit.url, "contents": contents}
    return {"document": document, "score": round(1.0 / (rank + 1), 6)}


class Handlers:
    """The work of each endpoint, run in a worker thread."""

    def __init__(
        self,
        backends: SearchBackends,
        allow_loopback: bool,
        timeout_s: float,
        *,
        max_pixels: int = imagecodec.QUERY_MAX_PIXELS,
        max_decodes: int = 2,
    ) -> None:
        self.backends, self.allow_loopback, self.timeout_s = backends, allow_loopback, timeout_s
        self.max_pixels = max_pixels
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()
        # decoding briefly needs several times an image's pixels: bound how many at once
        self._decodes = threading.BoundedSemaphore(max_decodes)

    def _text(self) -> TextSearchBackend:
        if self.backends.text is None:
            raise HTTPException(404, "this service has no text search")
        return self.backends.text

    def _image(self) -> ImageSearchBackend:
        if self.backends.image is None:
            raise HTTPException(404, "this service has no image search")
        return self.backends.image

    def text_search(self, request: TextSearchRequest) -> dict[str, Any]:
        hits = self._text().search(request.query, request.k, request.question)
        return {"hits": [text_hit_json(h) for h in hits[: request.k]]}

    def image_search(self, request: ImageSearchRequest) -> dict[str, Any]:
        backend = self._image()
        query = self._image_query(backend, request)
        try:
            hits = backend.search(query, request.k)
            return {"hits": [image_hit_json(h) for h in hits[: request.k]]}
        finally:
            if hasattr(query, "close"):
                query.close()  # frees the pixels now, not when the collector gets to them

    def retrieve(self, request: RetrieveRequest) -> dict[str, Any]:
        text = self._text()
        result = []
        for query in request.all_queries():
            scored = [
                retrieve_document(h, i) for i, h in enumerate(text.search(query, request.topk))
            ]
            result.append(scored if request.return_scores else [s["document"] for s in scored])
        return {"result": result}

    def backend_stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, backend in (("text", self.backends.text), ("image", self.backends.image)):
            stats = getattr(backend, "stats", None)
            if callable(stats):
                out[name] = stats()
        return out

    def _image_query(self, backend: ImageSearchBackend, request: ImageSearchRequest) -> Any:
        """A PIL image, or the url itself for backends that search by url."""
        from mmsr.search.web.guard import BlockedUrl, check_url

        try:
            if request.image_base64 is not None:
                with self._decodes:
                    return imagecodec.from_base64(request.image_base64, max_pixels=self.max_pixels)
            url = str(request.image_url)
            check_url(url)
            if getattr(backend, "accepts_image_urls", False):
                return url
            data = self._download(url)
            with self._decodes:
                return imagecodec.decode_image(data, max_pixels=self.max_pixels)
        except imagecodec.ImageTooLarge as err:
            raise HTTPException(413, str(err)) from None
        except (ValueError, BlockedUrl) as err:
            raise HTTPException(400, str(err)) from None

    def _download(self, url: str) -> bytes:
        from mmsr.search.web.guard import AddressPolicy, guarded_client, read_capped

        with self._lock:
            if self._client is None:
                policy = AddressPolicy(allow_loopback=self.allow_loopback)
                self._client = guarded_client(policy, timeout_s=self.timeout_s)
        try:
            return read_capped(self._client, url, MAX_IMAGE_BYTES)
        except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError) as err:
            raise ValueError(f"image url could not be fetched ({type(err).__name__})") from None
