"""The ``local`` search backend: an offline index built from a corpus folder.

``build_local(LocalConfig(index=DIR))`` opens an index made by ``mmsr index build``; see
``corpus.py`` for the corpus format, ``index.py`` for the index layout and ``search.py`` for
the searchers. The registry builds ``LocalConfig`` from ``{"backend": "local", "index": DIR}``.
"""

from __future__ import annotations

from dataclasses import dataclass

from mmsr.search.base import SearchBackends


@dataclass(frozen=True)
class LocalConfig:
    """The keys of the ``local`` backend."""

    index: str
    """An index folder made by ``mmsr index build``."""
    summary_chars: int = 500
    """Longest text-hit summary, in characters."""
    images: bool = True
    """Offer the image tool (it is absent anyway when the index has no images)."""
    color_weight: float = 2.0
    """Weight of the colour histograms beside the image features' cosine (0: features only)."""


def build_local(config: LocalConfig) -> SearchBackends:
    """Both tools over the index at ``config.index`` (registry entry point)."""
    from mmsr.search.local.index import read_manifest
    from mmsr.search.local.search import LocalImageSearch, LocalTextSearch

    manifest = read_manifest(config.index)
    text = LocalTextSearch(config.index, summary_chars=config.summary_chars)
    use_images = config.images and manifest.images > 0
    image = LocalImageSearch(config.index, color_weight=config.color_weight) if use_images else None
    return SearchBackends(image=image, text=text)
