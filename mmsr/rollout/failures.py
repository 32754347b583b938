"""Running one tool call so that nothing it raises stops a rollout (issue 18).

Backends promise to raise only ``SearchError`` (a failure of the outside world, with a safe
message). A backend that breaks its promise — an ``httpx.InvalidURL`` from an odd url in real
results, a ``RecursionError`` from deeply nested JSON — would otherwise end a whole
evaluation or training run. ``call_tool`` turns such an exception into a failed tool call as
well: the model sees a short message naming only the exception's type, the traceback is
logged once per (tool, type), and ``ToolFailures`` counts them. Not for policy errors.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from mmsr.search.base import SearchError

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


def call_tool(
    tool: str, run: Callable[[], list[Any]], failures: ToolFailures
) -> tuple[list[Any], str | None]:
    """``run()``'s hits and no error, or no hits and the error message of the failure."""
    try:
        return run(), None
    except SearchError as err:
        return [], str(err) or type(err).__name__
    except Exception as err:  # a backend broke its contract: still only this call fails
        return [], failures.record(tool, err)
