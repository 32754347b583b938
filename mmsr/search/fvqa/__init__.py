"""The ``fvqa`` search backend: FVQA's released image-search results, per question.

``build_fvqa(FvqaConfig(path=DIR))`` serves a folder written by ``mmsr search
convert-fvqa-cache``. It has an image tool only (the release has no text-search results).
"""

from __future__ import annotations

from dataclasses import dataclass

from mmsr.search.base import SearchBackends


@dataclass(frozen=True)
class FvqaConfig:
    """The keys of the ``fvqa`` backend."""

    path: str
    """A folder written by ``mmsr search convert-fvqa-cache``."""


def build_fvqa(config: FvqaConfig) -> SearchBackends:
    """The image tool over the released results at ``config.path`` (registry entry point)."""
    from mmsr.search.fvqa.backend import FvqaImageSearch

    return SearchBackends(image=FvqaImageSearch(config.path))
