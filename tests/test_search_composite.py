"""A composite search config: FVQA's released image hits with a local text index, both
through one cache; and the clear errors for combinations that cannot work."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from mmsr.config import ConfigError
from mmsr.search.cache import CachedImageSearch, CachedTextSearch
from mmsr.search.fvqa.convert import convert_release
from mmsr.search.registry import build_search, parse_search_config, resolved_search_config


@pytest.fixture
def fvqa_folder(tmp_path: Path) -> Path:
    release = {
        "fvqa_test_1": {
            "tool_returned_web_title_list": ["Flag of Peru", "Lima"],
            "tool_returned_images_urls": [Image.new("RGB", (5, 5), (220, 0, 0)), None],
        }
    }
    (tmp_path / "r.pkl").write_bytes(pickle.dumps(release))
    convert_release(tmp_path / "r.pkl", tmp_path / "fvqa")
    return tmp_path / "fvqa"


def _composite(fvqa: Path, index: Path, cache: dict[str, Any]) -> dict[str, Any]:
    return {
        "backend": "composite",
        "image": {"backend": "fvqa", "path": str(fvqa), "fetch_thumbnails": False},
        "text": {"backend": "local", "index": str(index)},
        "cache": cache,
    }


def _query(world: Path) -> str:
    with (world / "corpus" / "pages.jsonl").open(encoding="utf-8") as handle:
        return str(json.loads(handle.readline())["title"])


def test_fvqa_images_and_local_text_share_one_cache(
    small_world: tuple[Path, Path], fvqa_folder: Path, tmp_path: Path
) -> None:
    world, index = small_world
    store = {"mode": "read-write", "path": str(tmp_path / "cache.sqlite")}
    tools = build_search(_composite(fvqa_folder, index, store))
    assert isinstance(tools.image, CachedImageSearch) and isinstance(tools.text, CachedTextSearch)
    assert tools.image.cache is tools.text.cache
    picture = Image.new("RGB", (8, 8))
    picture.info["data_id"] = "fvqa_test_1"
    query = _query(world)
    for _ in range(2):  # the second round is answered by the cache
        images = tools.image.search(picture, 3)
        texts = tools.text.search(query, 3, question="What is it?")
    assert [h.title for h in images] == ["Flag of Peru", "Lima"]
    assert images[0].thumbnail is not None and texts and texts[0].title == query
    stats = tools.image.cache.stats()
    assert (stats["cache/image/misses"], stats["cache/image/hits"]) == (1, 1)
    assert (stats["cache/text/misses"], stats["cache/text/hits"]) == (1, 1)

    replay = build_search(_composite(fvqa_folder, index, {**store, "mode": "replay"}))
    assert replay.image is not None and replay.text is not None
    assert [h.title for h in replay.image.search(picture, 3)] == ["Flag of Peru", "Lima"]
    assert replay.text.search(query, 3, question="What is it?") == texts


def test_a_web_text_part_needs_no_image_search_key(
    fvqa_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SERPER_API_KEY", "serper-test-key")
    monkeypatch.delenv("SERPAPI_API_KEY", raising=False)
    config = {
        "backend": "composite",
        "image": {"backend": "fvqa", "path": str(fvqa_folder)},
        "text": {"backend": "web", "preset": "cheap"},
    }
    parsed = parse_search_config(config)
    assert parsed.options.text.options.image_engine == "none"  # set for the text part
    tools = build_search(parsed)
    assert tools.image is not None and tools.text is not None
    saved = resolved_search_config(config)["text"]  # what a run records
    assert (saved["image_engine"], saved["llm_model"]) == ("none", "gpt-4o-mini")


FVQA = {"backend": "fvqa", "path": "p"}
LOCAL = {"backend": "local", "index": "i"}
BAD = [
    # fvqa has no text search
    ({"image": LOCAL, "text": FVQA}, "'text': the fvqa backend has no text search"),
    # a part without a backend
    ({"image": FVQA, "text": {"index": "i"}}, "'text': expected a backend config"),
    # a part missing
    ({"image": FVQA}, "'text': expected a backend config"),
    # a cache inside a part
    ({"image": FVQA, "text": {**LOCAL, "cache": {}}}, "put 'cache' at the top level"),
    # composite inside composite
    ({"image": FVQA, "text": {"backend": "composite"}}, "cannot hold another"),
    # a key the composite config does not take
    ({"image": FVQA, "text": LOCAL, "index": "i"}, "unknown key\\(s\\) index"),
    # the web text part asked to search images too
    (
        {"image": FVQA, "text": {"backend": "web", "image_engine": "serpapi_lens"}},
        "serves only the text tool here; drop 'image_engine'",
    ),
    # a part's own keys are still checked
    ({"image": {**FVQA, "split": "val"}, "text": LOCAL}, "fvqa search backend: unknown config"),
]


@pytest.mark.parametrize(("config", "match"), BAD)
def test_bad_composites_are_refused(config: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_search_config({"backend": "composite", **config})
