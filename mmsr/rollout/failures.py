"""Running one tool call: timed, recorded, and so that nothing it raises stops a rollout.

``call_tool`` is the one place a search runs for a rollout — the engine's searches and those an
evaluation method makes for the model before its first turn — and returns the hits with the
``ToolCall`` that records them.

Backends promise to raise only ``SearchError`` (a failure of the outside world, with a safe
message). A backend that breaks its promise — an ``httpx.InvalidURL`` from an odd url in real
results, a ``RecursionError`` from deeply nested JSON — would otherwise end a whole
evaluation or training run. ``call_tool`` turns such an exception into a failed tool
call as well: the model sees a short message naming only the exception's type, the traceback is
logged once per (tool, type), and ``ToolFailures`` counts them. Not for policy errors.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Literal

from mmsr.rollout.trajectory import ToolCall, hit_record
from mmsr.search.base import SearchBackends, SearchError

logger = logging.getLogger(__name__)


class ToolFailures:
    """Thread-safe counts of unexpected tool exceptions, by ``"tool/ExceptionType"``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def record(self, tool: str, err: BaseException) -> str:
        """Counts ``err``, logs its traceback the first time its kind is seen; the message."""
        kind = f"{tool}/{type(err).__name__}"
        with self._lock:
            first = kind not in self.counts
            self.counts[kind] += 1
        if first:
            logger.error("%s search raised %s (a backend bug)", tool, kind, exc_info=err)
        return f"{tool} search failed unexpectedly ({type(err).__name__})"

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)


def _guarded(
    tool: str, run: Callable[[], list[Any]], failures: ToolFailures
) -> tuple[list[Any], str | None]:
    """``run()``'s hits and no error, or no hits and the error message of the failure."""
    try:
        return run(), None
    except SearchError as err:
        return [], str(err) or type(err).__name__
    except Exception as err:  # a backend broke its contract: still only this call fails
        return [], failures.record(tool, err)


def call_tool(
    tools: SearchBackends,
    tool: Literal["image", "text"],
    *,
    image: Any,
    query: str | None,
    question: str,
    k: int,
    failures: ToolFailures,
    turn: int = -1,
) -> tuple[list[Any], ToolCall]:
    """Run one search and record it: the image search with ``image``, or the text search for
    ``query`` (``question`` goes along for summaries). A missing tool or any failure is a
    ``ToolCall`` with an error and no hits. ``turn``: the assistant turn that asked (-1: made
    for the model before its first turn)."""
    if tool == "text" and query is None:
        raise ValueError("a text search needs a query")

    def run() -> list[Any]:
        if tool == "image":
            if tools.image is None:
                raise SearchError("image search is not available", tool="image")
            return tools.image.search(image, k)
        if tools.text is None:
            raise SearchError("text search is not available", tool="text")
        assert query is not None  # checked above
        return tools.text.search(query, k, question=question)

    start = time.perf_counter()
    hits, error = _guarded(tool, run, failures)
    latency = time.perf_counter() - start
    records = tuple(hit_record(hit) for hit in hits)
    return hits, ToolCall(turn, tool, query, len(hits), error, latency, records)
