"""One conformance suite run over every search backend built here (like Gymnasium's
environment checker). Each case says how to build the backend and what to query it with."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from search_helpers import query_image

from mmsr.search.base import ImageSearchBackend, SearchBackends, SearchError, TextSearchBackend
from mmsr.search.fvqa.convert import convert_release
from mmsr.search.registry import build_search
from mmsr.types import ImageHit, TextHit


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Path, Path], SearchBackends]  # (local index, tmp dir) -> backends
    image_query: Callable[[], Any]


def _fvqa(index: Path, tmp: Path) -> SearchBackends:
    release = {
        "fvqa_1": {
            "tool_returned_web_title_list": ["a", "b", "c"],
            "tool_returned_images_urls": [Image.new("RGB", (4, 4))] * 3,
        },
    }
    (tmp / "r.pkl").write_bytes(pickle.dumps(release))
    convert_release(tmp / "r.pkl", tmp / "fvqa")
    return build_search({"backend": "fvqa", "path": str(tmp / "fvqa")})


def _fvqa_query() -> Any:
    image = Image.new("RGB", (8, 8))
    image.info["data_id"] = "fvqa_1"
    return image


def _cached(mode: str) -> Callable[[Path, Path], SearchBackends]:
    def build(index: Path, tmp: Path) -> SearchBackends:
        cache = {"mode": mode, "path": str(tmp / "cache.sqlite")}
        return build_search({"backend": "local", "index": str(index), "cache": cache})

    return build


CASES = [
    # the offline index, no cache
    Case("local", lambda index, tmp: build_search({"backend": "local", "index": str(index)}),
         lambda: query_image("🦓")),
    # the same behind an SQLite cache, read-write
    Case("local+cache", _cached("read-write"), lambda: query_image("🦓")),
    # the same behind a cache that records every call
    Case("local+record", _cached("record"), lambda: query_image("🐧")),
    # FVQA's released results (image only)
    Case("fvqa", _fvqa, _fvqa_query),
]  # fmt: skip


@pytest.fixture(params=CASES, ids=[case.name for case in CASES])
def case_backends(
    request: pytest.FixtureRequest, local_index: Path, tmp_path: Path
) -> tuple[Case, SearchBackends]:
    case: Case = request.param
    return case, case.build(local_index, tmp_path)


def test_tools_satisfy_the_protocols(case_backends: tuple[Case, SearchBackends]) -> None:
    _, backends = case_backends
    assert backends.image is not None or backends.text is not None
    assert backends.image is None or isinstance(backends.image, ImageSearchBackend)
    assert backends.text is None or isinstance(backends.text, TextSearchBackend)


@pytest.mark.parametrize("k", [1, 2, 5])
def test_text_hits_are_well_formed_bounded_and_repeatable(
    case_backends: tuple[Case, SearchBackends], k: int
) -> None:
    _, backends = case_backends
    if backends.text is None:
        pytest.skip("no text tool")
    hits = backends.text.search("zebra stripes", k, question="what animal is this?")
    assert 1 <= len(hits) <= k
    for hit in hits:
        assert isinstance(hit, TextHit)
        assert all(isinstance(v, str) for v in (hit.title, hit.url, hit.summary))
    assert backends.text.search("zebra stripes", k, question="what animal is this?") == hits
    assert backends.text.search("zebra stripes", k) is not None  # question is optional


@pytest.mark.parametrize("k", [1, 2])
def test_image_hits_are_well_formed_bounded_and_repeatable(
    case_backends: tuple[Case, SearchBackends], k: int
) -> None:
    case, backends = case_backends
    if backends.image is None:
        pytest.skip("no image tool")
    hits = backends.image.search(case.image_query(), k)
    assert 1 <= len(hits) <= k
    for hit in hits:
        assert isinstance(hit, ImageHit)
        assert isinstance(hit.title, str) and isinstance(hit.url, str)
        assert hit.thumbnail is None or isinstance(hit.thumbnail, Image.Image)
    again = backends.image.search(case.image_query(), k)
    assert [(h.title, h.url) for h in again] == [(h.title, h.url) for h in hits]


@pytest.mark.parametrize("bad", [None, "not an image", b"\x89PNG"], ids=["none", "str", "bytes"])
def test_unusable_query_image_is_a_search_error(
    case_backends: tuple[Case, SearchBackends], bad: Any
) -> None:
    _, backends = case_backends
    if backends.image is None:
        pytest.skip("no image tool")
    with pytest.raises(SearchError) as info:
        backends.image.search(bad, 2)
    assert info.value.tool == "image"


@pytest.mark.parametrize("k", [0, -1])
def test_nonpositive_k_is_a_programming_error(
    case_backends: tuple[Case, SearchBackends], k: int
) -> None:
    case, backends = case_backends
    if backends.text is not None:
        with pytest.raises(ValueError):
            backends.text.search("zebra", k)
    if backends.image is not None:
        with pytest.raises(ValueError):
            backends.image.search(case.image_query(), k)
