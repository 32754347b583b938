"""Page readers: url -> page text. Jina Reader (a hosted API) or a local guarded fetch with
HTML-to-text by selectolax.

A reader either returns the page's title and text or raises ``SearchError``; the text chain
then replaces the page by the next url. Readers do not summarise and do not cache.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from selectolax.lexbor import LexborHTMLParser

from mmsr.search.base import SearchError
from mmsr.search.transport import ApiCaller, CallStats, Secret
from mmsr.search.web.guard import BlockedUrl, check_url

TEXT_TYPES = ("text/html", "application/xhtml+xml", "text/plain")
_DROP_TAGS = ["script", "style", "noscript", "template", "svg", "iframe", "head"]
_BLANK_RUNS = re.compile(r"\n\s*\n+")
_SPACE_RUNS = re.compile(r"[ \t\r\f\v]+")


@dataclass(frozen=True)
class FetchedPage:
    """The readable text of one web page as a reader fetched it (not a page of the local
    corpus: that is ``mmsr.search.local.corpus.Page``)."""

    url: str
    title: str
    text: str


class PageReader(Protocol):
    """Reads one page; raises ``SearchError`` when it cannot."""

    def read(self, url: str) -> FetchedPage: ...


def tidy(text: str) -> str:
    """Collapses runs of spaces and blank lines."""
    lines = (_SPACE_RUNS.sub(" ", line).strip() for line in text.splitlines())
    return _BLANK_RUNS.sub("\n\n", "\n".join(lines)).strip()


def html_to_text(html: str) -> tuple[str, str]:
    """(title, text) of an HTML document, without scripts, styles and markup."""
    tree = LexborHTMLParser(html)
    title_node = tree.css_first("title")
    title = tidy(title_node.text()) if title_node is not None else ""
    tree.strip_tags(_DROP_TAGS)
    root = tree.body if tree.body is not None else tree.root
    text = root.text(separator=" ") if root is not None else ""
    return title, tidy(text)


class JinaReader:
    """Jina Reader: GET ``<prefix><url>`` asking for JSON ``{"data": {"title", "content"}}``."""

    def __init__(self, caller: ApiCaller, prefix: str, key: Secret | None) -> None:
        self.caller, self.prefix, self.key = caller, prefix, key

    def read(self, url: str) -> FetchedPage:
        try:
            check_url(url)
        except BlockedUrl as err:
            raise SearchError(str(err)) from None
        headers = {"Accept": "application/json"}
        if self.key is not None:
            headers["Authorization"] = f"Bearer {self.key.reveal()}"
        body = self.caller.json("GET", self.prefix + url, headers=headers)
        data = body.get("data") if isinstance(body, dict) else None
        content = data.get("content") if isinstance(data, dict) else None
        if not isinstance(content, str):
            raise SearchError("jina returned a body without page content")
        title = data.get("title") if isinstance(data, dict) else None
        if not content.strip():
            raise SearchError("jina returned an empty page")
        return FetchedPage(url=url, title=title if isinstance(title, str) else "", text=content)


class LocalReader:
    """Fetches the page itself through the SSRF-guarded client and converts HTML to text."""

    def __init__(self, client: httpx.Client, *, max_bytes: int) -> None:
        self.client, self.max_bytes = client, max_bytes
        self.service = "fetch"
        self.stats = CallStats()

    def read(self, url: str) -> FetchedPage:
        started = time.monotonic()
        self.stats.add(calls=1)
        try:
            return self._read(url)
        except SearchError:
            self.stats.add(failures=1)
            raise
        finally:
            self.stats.add(seconds=time.monotonic() - started)

    def _read(self, url: str) -> FetchedPage:
        try:
            check_url(url)
            with self.client.stream("GET", url) as response:
                if not response.is_success:
                    raise SearchError(f"page answered HTTP {response.status_code}")
                kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
                if kind and kind not in TEXT_TYPES:
                    raise SearchError(f"page is not text ({kind})")
                raw = self._body(response)
                encoding = response.charset_encoding or "utf-8"
        except BlockedUrl as err:
            raise SearchError(str(err)) from None
        except httpx.TimeoutException:
            raise SearchError("page fetch timed out", retryable=True) from None
        except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError) as err:
            raise SearchError(f"page fetch failed ({type(err).__name__})") from None
        html = (
            raw.decode(encoding, errors="replace")
            if _known(encoding)
            else raw.decode("utf-8", errors="replace")
        )
        title, text = html_to_text(html) if kind != "text/plain" else ("", tidy(html))
        if not text:
            raise SearchError("page has no text")
        return FetchedPage(url=url, title=title, text=text)

    def _body(self, response: httpx.Response) -> bytes:
        """The first ``max_bytes`` of the body; a huge page is cut, not read to the end."""
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size >= self.max_bytes:
                break
        return b"".join(chunks)[: self.max_bytes]


def _known(encoding: Any) -> bool:
    try:
        "".encode(encoding)
    except (LookupError, TypeError):
        return False
    return True
