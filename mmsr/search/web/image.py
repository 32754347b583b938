"""Reverse image search through SerpAPI Google Lens (paper §2.2).

Lens needs a public image url. A query given as an http(s) url string is sent as is; a PIL
image is first given a url by an ``ImageUploader`` (none is configured by default, and then
the search fails with a message that says how to configure one). Thumbnails of the matches
are downloaded through the SSRF-guarded client and shrunk; a thumbnail that fails leaves the
hit without one. Results are cached per image in the ``image`` layer, thumbnails included
(base64 PNG), so a replayed search returns the same pictures.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import httpx

from mmsr.search import imagecodec
from mmsr.search.base import LayerCache, SearchError
from mmsr.search.transport import ApiCaller, Secret
from mmsr.search.web.engines import Link, SerpApiLens
from mmsr.search.web.guard import BlockedUrl, check_url, read_capped
from mmsr.types import ImageHit

logger = logging.getLogger(__name__)

MAX_HITS = 20  # hits kept per image in the cache; a search asks for k <= MAX_HITS of them
MAX_THUMBNAIL_BYTES = 5_000_000


class ImageUploader(Protocol):
    """Makes image bytes reachable at a public url that the reverse-search API can fetch."""

    def upload(self, data: bytes, content_type: str) -> str: ...


class NoUploader:
    """The default: images without a public url cannot be searched, and the error says why."""

    def upload(self, data: bytes, content_type: str) -> str:
        raise SearchError(
            "image search needs a public image url and no uploader is configured "
            "(set uploader='http_post' and upload_url in the web search config)",
            tool="image",
        )


class HttpPostUploader:
    """POSTs the raw bytes to an endpoint you run; it answers ``{"url": ...}`` or the url as
    plain text."""

    def __init__(self, caller: ApiCaller, url: str, token: Secret | None) -> None:
        self.caller, self.url, self.token = caller, url, token

    def upload(self, data: bytes, content_type: str) -> str:
        headers = {"Content-Type": content_type}
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token.reveal()}"
        response = self.caller.request("POST", self.url, content=data, headers=headers)
        text = response.text.strip()
        if response.headers.get("content-type", "").startswith("application/json"):
            try:
                body = response.json()
            except ValueError:
                body = None
            text = body.get("url", "") if isinstance(body, dict) else ""
        try:
            check_url(text)
        except BlockedUrl:
            raise SearchError("image upload answered no usable url", tool="image") from None
        return text


class WebImageSearch:
    """``ImageSearchBackend`` over Google Lens; ``image`` is a PIL image or an image url."""

    accepts_image_urls = True

    def __init__(
        self,
        lens: SerpApiLens,
        *,
        uploader: ImageUploader,
        thumbnail_client: httpx.Client | None,
        cache: LayerCache | None = None,
        stats: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.lens, self.uploader, self.thumbnail_client = lens, uploader, thumbnail_client
        self.cache, self._stats = cache, stats

    def stats(self) -> dict[str, Any]:
        return self._stats() if self._stats is not None else {}

    def search(self, image: Any, k: int) -> list[ImageHit]:
        if k <= 0:
            return []
        key, locate = self._locate(image)

        def compute() -> list[dict[str, Any]]:
            return self._lookup(locate(), MAX_HITS)

        rows = compute() if self.cache is None else self.cache.get_or_compute("image", key, compute)
        return [_hit(row) for row in rows[:k]]

    def _locate(self, image: Any) -> tuple[str, Callable[[], str]]:
        """(cache key, a function giving the public url); uploads only on a cache miss."""
        if isinstance(image, str):
            try:
                check_url(image)
            except BlockedUrl as err:
                raise SearchError(str(err), tool="image") from None
            return "url:" + hashlib.sha256(image.encode()).hexdigest(), lambda: image
        if not hasattr(image, "tobytes"):
            raise TypeError(f"image search takes a PIL image or a url, not {type(image)}")
        return "pixels:" + imagecodec.image_digest(image), lambda: self.uploader.upload(
            imagecodec.encode_image(image, "PNG"), "image/png"
        )

    def _lookup(self, url: str, n: int) -> list[dict[str, Any]]:
        matches = self.lens.matches(url, n)
        with ThreadPoolExecutor(max_workers=8) as pool:
            thumbs = list(pool.map(self._thumbnail, matches))
        return [
            {"title": m.title, "url": m.url, "thumbnail_png_b64": t}
            for m, t in zip(matches, thumbs, strict=True)
        ]

    def _thumbnail(self, link: Link) -> str | None:
        if self.thumbnail_client is None or not link.thumbnail_url:
            return None
        try:
            data = read_capped(self.thumbnail_client, link.thumbnail_url, MAX_THUMBNAIL_BYTES)
            png = imagecodec.thumbnail_png(data)
        except (BlockedUrl, httpx.HTTPError, ValueError) as err:
            logger.debug("thumbnail dropped: %s", type(err).__name__)
            return None
        return base64.b64encode(png).decode("ascii")


def _hit(row: dict[str, Any]) -> ImageHit:
    encoded = row.get("thumbnail_png_b64")
    thumbnail = imagecodec.from_base64(encoded) if encoded else None
    return ImageHit(title=row["title"], url=row["url"], thumbnail=thumbnail)
