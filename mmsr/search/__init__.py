"""Search tools: image and text search interfaces, backends, cache and service.

No torch at import time; backends that need heavy libraries import them when built.
"""

from mmsr.search.base import ImageSearchBackend, SearchError, TextSearchBackend

__all__ = ["ImageSearchBackend", "SearchError", "TextSearchBackend"]
