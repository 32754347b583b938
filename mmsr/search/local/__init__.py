"""The ``local`` search backend: an offline index built from a corpus folder (DESIGN §3).

``build({"index": DIR})`` opens an index made by ``mmsr index build``; see ``corpus.py`` for
the corpus format, ``index.py`` for the index layout and ``search.py`` for the searchers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mmsr.search.base import SearchBackends


def build(config: Mapping[str, Any]) -> SearchBackends:
    """Both tools over the index at ``config["index"]``.

    Optional keys: ``summary_chars`` (longest text-hit summary, default 500) and ``images``
    (false to skip the image tool). The image tool is absent when the index has no images.
    """
    from mmsr.search.local.index import read_manifest
    from mmsr.search.local.search import LocalImageSearch, LocalTextSearch
    from mmsr.search.registry import check_keys

    check_keys(
        config,
        where="local search backend",
        required=("index",),
        optional=("summary_chars", "images"),
    )
    index = str(config["index"])
    manifest = read_manifest(index)
    text = LocalTextSearch(index, summary_chars=int(config.get("summary_chars", 500)))
    use_images = bool(config.get("images", True)) and manifest.images > 0
    return SearchBackends(image=LocalImageSearch(index) if use_images else None, text=text)
