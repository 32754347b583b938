"""Search APIs: query -> ranked links (SerpAPI Google, Serper) and image url -> visual matches
(SerpAPI Google Lens).

Each engine turns one API's JSON into plain ``Link`` records and nothing else: no pages, no
summaries, no caching. Items without a usable http(s) link are skipped; a body that is not
the expected shape is a ``SearchError``; "no results" is an empty list, not an error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

from mmsr.redact import redact_text
from mmsr.search.base import SearchError
from mmsr.search.transport import ApiCaller, Secret

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Link:
    """One ranked result of a search API; ``thumbnail_url`` only for image matches."""

    title: str
    url: str
    snippet: str = ""
    thumbnail_url: str = ""


class LinkSearch(Protocol):
    """A text search API: the top ``n`` links for ``query``."""

    def links(self, query: str, n: int) -> list[Link]: ...


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _is_web_url(value: Any) -> bool:
    return isinstance(value, str) and value.lower().startswith(("http://", "https://"))


def parse_links(items: Any, *, url_key: str, n: int, tool: str = "text") -> list[Link]:
    """Links from a list of result objects; malformed items are skipped, not fatal."""
    if items is None:
        return []
    if not isinstance(items, list):
        raise SearchError("search API returned results that are not a list", tool=tool)
    links: list[Link] = []
    for item in items:
        if not isinstance(item, dict) or not _is_web_url(item.get(url_key)):
            continue
        thumb = item.get("thumbnail")
        links.append(
            Link(
                title=_text(item.get("title")) or _text(item.get("source")),
                url=item[url_key],
                snippet=_text(item.get("snippet")),
                thumbnail_url=thumb if isinstance(thumb, str) and _is_web_url(thumb) else "",
            )
        )
        if len(links) >= n:
            break
    return links


def _serpapi_body(body: Any, *, service: str, tool: str) -> dict[str, Any]:
    """The JSON object of a SerpAPI answer; its ``error`` field means failure unless it
    only says that there are no results."""
    if not isinstance(body, dict):
        raise SearchError(f"{service} returned a body that is not a JSON object", tool=tool)
    error = body.get("error")
    if isinstance(error, str) and error:
        if "returned any results" in error or "no results" in error.lower():
            return {}
        logger.debug("%s error field: %s", service, redact_text(error[:300]))
        raise SearchError(f"{service} reported an error", tool=tool)
    return body


class SerpApiGoogle:
    """SerpAPI's Google engine: GET with ``engine=google``; links in ``organic_results``."""

    def __init__(self, caller: ApiCaller, url: str, key: Secret) -> None:
        self.caller, self.url, self.key = caller, url, key

    def links(self, query: str, n: int) -> list[Link]:
        params = {"engine": "google", "q": query, "num": str(n), "api_key": self.key.reveal()}
        body = _serpapi_body(
            self.caller.json("GET", self.url, params=params), service="serpapi", tool="text"
        )
        return parse_links(body.get("organic_results"), url_key="link", n=n)


class Serper:
    """Serper: POST ``{"q", "num"}`` with the key in ``X-API-KEY``; links in ``organic``."""

    def __init__(self, caller: ApiCaller, url: str, key: Secret) -> None:
        self.caller, self.url, self.key = caller, url, key

    def links(self, query: str, n: int) -> list[Link]:
        body = self.caller.json(
            "POST",
            self.url,
            json={"q": query, "num": n},
            headers={"X-API-KEY": self.key.reveal()},
        )
        if not isinstance(body, dict):
            raise SearchError("serper returned a body that is not a JSON object")
        return parse_links(body.get("organic"), url_key="link", n=n)


class SerpApiLens:
    """SerpAPI's Google Lens engine: GET with ``engine=google_lens&url=…``; matches in
    ``visual_matches`` (title, link, source, thumbnail)."""

    def __init__(self, caller: ApiCaller, url: str, key: Secret) -> None:
        self.caller, self.url, self.key = caller, url, key

    def matches(self, image_url: str, n: int) -> list[Link]:
        params = {"engine": "google_lens", "url": image_url, "api_key": self.key.reveal()}
        body = _serpapi_body(
            self.caller.json("GET", self.url, params=params), service="serpapi", tool="image"
        )
        return parse_links(body.get("visual_matches"), url_key="link", n=n, tool="image")
