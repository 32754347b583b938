"""The ``fvqa`` search backend: FVQA's released image-search results, per question.

``build({"path": DIR})`` serves a folder written by ``mmsr search convert-fvqa-cache``. It
has an image tool only (the release has no text-search results).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mmsr.search.base import SearchBackends


def build(config: Mapping[str, Any]) -> SearchBackends:
    from mmsr.search.fvqa.backend import FvqaImageSearch
    from mmsr.search.registry import check_keys

    check_keys(config, where="fvqa search backend", required=("path",))
    return SearchBackends(image=FvqaImageSearch(config["path"]))
