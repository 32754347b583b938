"""The ``fvqa`` search backend: FVQA's released image-search results, per question.

``build_fvqa(FvqaConfig(path=DIR))`` serves a folder written by ``mmsr search
convert-fvqa-cache``. It has an image tool only (the release has no text-search results).
"""

from __future__ import annotations

from dataclasses import dataclass

from mmsr.search.base import SearchBackends

THUMBNAIL_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class FvqaConfig:
    """The keys of the ``fvqa`` backend."""

    path: str
    """A folder written by ``mmsr search convert-fvqa-cache``."""
    fetch_thumbnails: bool = True
    """Download the thumbnails the release gives as urls (needs a network; else none)."""
    allow_loopback: bool = False
    """Let thumbnail fetches reach 127.0.0.1 (tests only)."""


def build_fvqa(config: FvqaConfig) -> SearchBackends:
    """The image tool over the released results at ``config.path`` (registry entry point)."""
    from mmsr.search.fvqa.backend import FvqaImageSearch

    client = None
    if config.fetch_thumbnails:
        from mmsr.search.web.guard import AddressPolicy, guarded_client

        policy = AddressPolicy(allow_loopback=config.allow_loopback)
        client = guarded_client(policy, timeout_s=THUMBNAIL_TIMEOUT_S)
    return SearchBackends(image=FvqaImageSearch(config.path, thumbnail_client=client))
