"""The two search interfaces and the one error type every backend raises.

A backend failure of any kind (timeout, HTTP error, malformed reply, missing index entry,
cache miss in replay mode) is raised as ``SearchError``; the rollout turns it into an
observation for the model. Programming errors are not wrapped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from mmsr.types import ImageHit, TextHit


class SearchError(Exception):
    """A search could not be done. ``tool`` is "image" or "text"; the message is safe to show."""

    def __init__(self, message: str, *, tool: str = "text", retryable: bool = False) -> None:
        super().__init__(message)
        self.tool = tool
        self.retryable = retryable


@runtime_checkable
class ImageSearchBackend(Protocol):
    """Reverse image search: the pages whose images look like ``image`` (a PIL image)."""

    def search(self, image: Any, k: int) -> list[ImageHit]: ...


@runtime_checkable
class TextSearchBackend(Protocol):
    """Web search for ``query``; ``question`` (the user's question) may focus the summaries."""

    def search(self, query: str, k: int, question: str | None = None) -> list[TextHit]: ...


@dataclass(frozen=True)
class SearchBackends:
    """What a backend factory builds from a config: either tool may be missing."""

    image: ImageSearchBackend | None = None
    text: TextSearchBackend | None = None


class LayerCache(Protocol):
    """A cache of JSON-serialisable values in named layers.

    Layers used by the web chain: ``"text_query"`` (query -> urls), ``"page"`` (url -> page
    text), ``"summary"`` ((page hash, question) -> summary), ``"image"`` (image hash -> hits).
    ``get_or_compute`` returns the stored value or calls ``compute`` (and stores its result,
    depending on the cache mode); in ``replay`` mode a miss raises ``SearchError``.
    """

    def get_or_compute(self, layer: str, key: str, compute: Callable[[], Any]) -> Any: ...
