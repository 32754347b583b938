"""The ``http`` backend: search through an ``mmsr search serve`` service on another machine.

Rollout workers use it exactly like a local backend: the same ``TextHit`` / ``ImageHit``
records come back, thumbnails decoded to PIL images. The bearer token is read from an
environment variable (default ``MMSR_SEARCH_TOKEN``). Busy (503) and rate-limited (429)
answers are retried with back-off; every failure is a ``SearchError`` carrying the service's
own message.

Config: ``{"backend": "http", "url": "http://search-host:8000"}`` plus the optional fields of
``HttpConfig``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from mmsr.search import imagecodec
from mmsr.search.base import SearchBackends, SearchError
from mmsr.search.transport import ApiCaller, RetryPolicy, Secret, make_client, secret_from_env
from mmsr.types import ImageHit, TextHit

CLIENT_RETRY_STATUSES = frozenset({429, 503})  # the service already retried its upstreams


@dataclass(frozen=True)
class HttpConfig:
    """Where the service is and how patiently to call it."""

    url: str
    """Root of the service, e.g. ``http://10.0.0.5:8000``."""
    token_env: str = "MMSR_SEARCH_TOKEN"
    """Environment variable with the bearer token (unset: no Authorization header)."""
    timeout_s: float = 120.0
    """Timeout of one call (a web text search can take a while)."""
    retry_attempts: int = 4
    """Attempts per call on 429/503 and dropped connections."""
    retry_base_delay_s: float = 0.5
    """First back-off; doubles per retry, with jitter."""
    tools: tuple[str, ...] = ("image", "text")
    """Which tools the service offers to this client."""
    trust_env: bool = False
    """Use proxy settings from the environment (off: the service is usually on a LAN)."""

    def __post_init__(self) -> None:
        # checked here, when the config is built: a bad url would otherwise fail every search
        # as an observation, and a run would end "successfully" with no search done
        try:
            parts = urlsplit(self.url)
            ok = parts.scheme in ("http", "https") and bool(parts.hostname)
            parts.port  # noqa: B018 - raises on a port out of range or not a number
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"url {self.url!r} is not http(s)://HOST[:PORT]")


def _detail(response: httpx.Response) -> str | None:
    """The service's own error message (safe by construction), shortened."""
    try:
        body = response.json()
    except (ValueError, RecursionError):
        return None
    detail = body.get("detail") if isinstance(body, dict) else None
    return detail[:300] if isinstance(detail, str) else None


class _Service:
    def __init__(self, config: HttpConfig, token: Secret | None, tool: str) -> None:
        headers = {} if token is None else {"Authorization": f"Bearer {token.reveal()}"}
        client = make_client(
            timeout_s=config.timeout_s, trust_env=config.trust_env, headers=headers
        )
        retry = RetryPolicy(attempts=config.retry_attempts, base_delay_s=config.retry_base_delay_s)
        self.root = config.url.rstrip("/")
        self.caller = ApiCaller(
            "search service",
            client,
            retry=retry,
            tool=tool,
            retry_statuses=CLIENT_RETRY_STATUSES,
            detail=_detail,
        )

    def hits(self, path: str, payload: dict[str, Any]) -> list[dict[str, Any]]:
        body = self.caller.json("POST", self.root + path, json=payload)
        hits = body.get("hits") if isinstance(body, dict) else None
        if not isinstance(hits, list) or not all(isinstance(h, dict) for h in hits):
            raise SearchError("search service returned no hit list", tool=self.caller.tool)
        return hits

    def stats(self) -> dict[str, Any]:
        return {"search_service": self.caller.stats.snapshot()}


class HttpTextSearch(_Service):
    """``TextSearchBackend`` over ``POST /text_search``."""

    def search(self, query: str, k: int, question: str | None = None) -> list[TextHit]:
        payload: dict[str, Any] = {"query": query, "k": k}
        if question:
            payload["question"] = question
        try:
            return [
                TextHit(h["title"], h["url"], h["summary"])
                for h in self.hits("/text_search", payload)
            ]
        except KeyError:
            raise SearchError("search service returned a malformed text hit") from None


class HttpImageSearch(_Service):
    """``ImageSearchBackend`` over ``POST /image_search``; ``image`` is a PIL image or a url."""

    accepts_image_urls = True

    def search(self, image: Any, k: int) -> list[ImageHit]:
        if isinstance(image, str):
            payload: dict[str, Any] = {"image_url": image, "k": k}
        else:
            # the service decodes no more than QUERY_MAX_PIXELS by default: send no more
            query = imagecodec.fit_pixels(image, imagecodec.QUERY_MAX_PIXELS)
            payload = {"image_base64": imagecodec.to_base64(query, "PNG"), "k": k}
        out = []
        for hit in self.hits("/image_search", payload):
            try:
                encoded = hit.get("thumbnail_base64")
                thumbnail = imagecodec.from_base64(encoded) if encoded else None
                out.append(ImageHit(hit["title"], hit["url"], thumbnail))
            except (KeyError, ValueError):
                raise SearchError(
                    "search service returned a malformed image hit", tool="image"
                ) from None
        return out


def build_http(config: HttpConfig, *, env: Mapping[str, str] | None = None) -> SearchBackends:
    """The tools of the service at ``config.url``; the token comes from ``env`` (registry entry
    point; default ``os.environ``)."""
    env = os.environ if env is None else env
    token = secret_from_env(env, config.token_env, required=False)
    text = HttpTextSearch(config, token, "text") if "text" in config.tools else None
    image = HttpImageSearch(config, token, "image") if "image" in config.tools else None
    return SearchBackends(image=image, text=text)
