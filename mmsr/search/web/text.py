"""The paper's text-search chain (§2.2): query -> search API -> top urls -> page reader ->
LLM summary per page; pages that fail are replaced by the next urls until ``pages``
summaries exist or the urls run out.

Pages are read and summarised concurrently. Every step goes through the optional
``LayerCache``: ``text_query`` (query -> links), ``page`` (url -> page), ``summary``
((page hash, query, question, summarizer) -> summary). Values in the cache are plain JSON
and hold no key. Failures of single pages are observations (replaced); the search fails only
when the API fails or every page does.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from mmsr.search.base import LayerCache, SearchError
from mmsr.search.web.engines import Link, LinkSearch
from mmsr.search.web.pages import FetchedPage, PageReader
from mmsr.search.web.summarize import ChatSummarizer, SummaryRequest
from mmsr.types import TextHit

logger = logging.getLogger(__name__)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class WebTextSearch:
    """``TextSearchBackend`` over a search API, a page reader and a summarizer."""

    def __init__(
        self,
        engine: LinkSearch,
        reader: PageReader,
        summarizer: ChatSummarizer,
        *,
        engine_name: str,
        pages: int = 5,
        candidate_urls: int = 10,
        concurrency: int = 5,
        page_chars: int = 30_000,
        cache: LayerCache | None = None,
        stats: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.engine, self.reader, self.summarizer = engine, reader, summarizer
        self.engine_name, self.pages, self.candidate_urls = engine_name, pages, candidate_urls
        self.concurrency, self.page_chars, self.cache = concurrency, page_chars, cache
        self._stats = stats

    def stats(self) -> dict[str, Any]:
        """Call, failure, retry and cost counters of the services this chain uses."""
        return self._stats() if self._stats is not None else {}

    def search(self, query: str, k: int, question: str | None = None) -> list[TextHit]:
        query = query.strip()
        if not query:
            raise SearchError("empty text query")
        want = min(k, self.pages)
        if want <= 0:
            return []
        links = self._links(query)
        if not links:
            return []
        return self._summaries(links, want, query, (question or "").strip())

    def _cached(self, layer: str, key: str, compute: Callable[[], Any]) -> Any:
        if self.cache is None:
            return compute()
        return self.cache.get_or_compute(layer, key, compute)

    def _links(self, query: str) -> list[Link]:
        def compute() -> list[dict[str, str]]:
            links = self.engine.links(query, self.candidate_urls)
            return [{"title": x.title, "url": x.url, "snippet": x.snippet} for x in links]

        key = f"{self.engine_name}|{self.candidate_urls}|{query}"
        rows = self._cached("text_query", key, compute)
        return [Link(title=r["title"], url=r["url"], snippet=r.get("snippet", "")) for r in rows]

    def _summaries(self, links: list[Link], want: int, query: str, question: str) -> list[TextHit]:
        done_hits: dict[int, TextHit] = {}
        pending: dict[Future[TextHit], int] = {}
        failures, next_link = 0, 0
        with ThreadPoolExecutor(max_workers=min(self.concurrency, want)) as pool:
            while len(done_hits) < want:
                while len(pending) + len(done_hits) < want and next_link < len(links):
                    link = links[next_link]
                    pending[pool.submit(self._hit, link, query, question)] = next_link
                    next_link += 1
                if not pending:
                    break
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    rank = pending.pop(future)
                    try:
                        done_hits[rank] = future.result()
                    except SearchError as err:
                        failures += 1
                        logger.debug("page %d replaced: %s", rank, err)
        if not done_hits:
            raise SearchError(f"all {failures} pages failed to load or summarise", retryable=True)
        return [done_hits[rank] for rank in sorted(done_hits)]

    def _hit(self, link: Link, query: str, question: str) -> TextHit:
        page = self._page(link.url)
        page_hash = _sha(page.text)
        key = _sha(json.dumps([page_hash, query, question, self.summarizer.fingerprint]))
        request = SummaryRequest(query=query, question=question, title=page.title, text=page.text)
        summary = self._cached("summary", key, lambda: self.summarizer.summarize(request))
        return TextHit(title=link.title or page.title or link.url, url=link.url, summary=summary)

    def _page(self, url: str) -> FetchedPage:
        def compute() -> dict[str, str]:
            page = self.reader.read(url)
            return {"title": page.title, "text": page.text[: self.page_chars]}

        row = self._cached("page", url, compute)
        return FetchedPage(url=url, title=row["title"], text=row["text"])
