"""FVQA's released image-search cache in its real shape: a pickle built here with the
release's key names, embedded Pillow thumbnails, thumbnail urls (one dead), an empty entry,
an odd entry and a missing id; converted, then served with the url thumbnails fetched from a
loopback server and kept once fetched."""

from __future__ import annotations

import io
import json
import pickle
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from loopback import loopback_server
from PIL import Image

from mmsr.search.fvqa.backend import FvqaImageSearch
from mmsr.search.fvqa.convert import UnsafePickleError, convert_release, load_release
from mmsr.search.registry import build_search


def _png(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (12, 9), color).save(buffer, format="PNG")
    return buffer.getvalue()


class _Thumbs:
    """Thumbnail host: ``/live/<r>`` answers a PNG of red ``r``, anything else 404."""

    def __init__(self) -> None:
        self.requests: list[str] = []

    def __call__(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        self.requests.append(path)
        if path.startswith("/live/"):
            return 200, {"Content-Type": "image/png"}, _png((int(path[6:]), 0, 0))
        return 404, {}, b"gone"


@pytest.fixture
def thumb_host() -> Iterator[tuple[str, _Thumbs]]:
    host = _Thumbs()
    with loopback_server(host) as url:
        yield url, host


def _release(base: str) -> dict[str, Any]:
    """Four entries as the release writes them; fvqa_train_4 is absent."""
    return {
        "fvqa_train_1": {
            "tool_returned_web_title_list": ["Tower Bridge", "London sights", "A dead link"],
            "tool_returned_images_urls": [
                Image.new("RGB", (6, 4), (200, 10, 10)),  # embedded picture
                f"{base}/live/77",  # a url that still answers
                f"{base}/dead/1.jpg",  # a url that is gone
            ],
        },
        "fvqa_train_2": {  # ids without results: empty lists ...
            "tool_returned_web_title_list": [],
            "tool_returned_images_urls": [],
        },
        "fvqa_train_3": ["not", "a", "dict"],  # ... and an entry of another shape
        "fvqa_train_5": {  # odd thumbnails: a number, a non-http string; a missing one
            "tool_returned_web_title_list": ["Tagus", "Lisbon", "Belem"],
            "tool_returned_images_urls": [42, "file:///etc/passwd"],
        },
    }


def _convert(tmp_path: Path, base: str, protocol: int = 4) -> dict[str, int]:
    path = tmp_path / "fvqa_train_image_search_results_cache.pkl"
    path.write_bytes(pickle.dumps(_release(base), protocol=protocol))
    return convert_release(
        path, tmp_path / "safe", expected_ids=[f"fvqa_train_{i}" for i in range(1, 6)]
    )


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_conversion_counts_coverage_and_thumbnail_kinds(tmp_path: Path, protocol: int) -> None:
    counts = _convert(tmp_path, "http://127.0.0.1:9", protocol)
    assert counts == {
        "entries": 4,
        "ids_with_results": 2,
        "ids_without_results": 2,  # the empty entry and the odd one
        "bad_entries": 1,
        "hits": 6,
        "thumbnails": 1,
        "thumbnail_urls": 2,
        "bad_thumbnails": 2,  # 42 and the file: url
        "ids_expected": 5,
        "ids_missing": 1,
    }
    manifest = json.loads((tmp_path / "safe" / "manifest.json").read_text())
    assert manifest["missing_ids"] == ["fvqa_train_4"]


def test_url_thumbnails_are_fetched_once_and_dead_ones_counted(
    tmp_path: Path, thumb_host: tuple[str, _Thumbs]
) -> None:
    base, host = thumb_host
    _convert(tmp_path, base)
    config = {"backend": "fvqa", "path": str(tmp_path / "safe"), "allow_loopback": True}
    image = build_search(config).image
    assert isinstance(image, FvqaImageSearch)
    hits = image.search_id("fvqa_train_1", 5)
    assert [h.title for h in hits] == ["Tower Bridge", "London sights", "A dead link"]
    assert hits[0].thumbnail.getpixel((0, 0)) == (200, 10, 10)
    assert hits[1].thumbnail.convert("RGB").getpixel((0, 0)) == (77, 0, 0)
    assert hits[2].thumbnail is None
    stats = image.stats()
    assert (stats["fvqa/thumbnails_fetched"], stats["fvqa/thumbnails_failed"]) == (1, 1)

    image.search_id("fvqa_train_1", 5)  # this process: neither url is asked again
    assert sorted(host.requests) == ["/dead/1.jpg", "/live/77"]
    again = build_search(config).image  # another process: the fetched one is on disk
    assert again is not None and again.search(_with_id("fvqa_train_1"), 2)[1].thumbnail
    assert sorted(host.requests) == ["/dead/1.jpg", "/live/77"]


def test_offline_serving_keeps_url_hits_without_thumbnails(tmp_path: Path) -> None:
    _convert(tmp_path, "http://127.0.0.1:9")
    config = {"backend": "fvqa", "path": str(tmp_path / "safe"), "fetch_thumbnails": False}
    image = build_search(config).image
    assert isinstance(image, FvqaImageSearch)
    hits = image.search_id("fvqa_train_1", 3)
    assert [h.thumbnail is None for h in hits] == [False, True, True]
    assert image.stats()["fvqa/thumbnails_not_fetched"] == 2
    titles = [h.title for h in image.search_id("fvqa_train_5", 3)]
    assert titles == ["Tagus", "Lisbon", "Belem"]  # odd thumbnails cost only the picture


@pytest.mark.parametrize("data_id", ["fvqa_train_2", "fvqa_train_3", "fvqa_train_4"])
def test_an_id_without_results_is_a_failed_image_call(tmp_path: Path, data_id: str) -> None:
    from mmsr.rollout.failures import ToolFailures, call_tool

    _convert(tmp_path, "http://127.0.0.1:9")
    backends = build_search({"backend": "fvqa", "path": str(tmp_path / "safe")})
    failures = ToolFailures()
    hits, record = call_tool(
        backends,
        "image",
        image=_with_id(data_id),
        query=None,
        question="q",
        k=3,
        failures=failures,
    )
    assert hits == [] and failures.snapshot() == {}  # an observation, not a backend bug
    assert f"no released image-search results for data_id '{data_id}'" in str(record.error)
    assert backends.image.stats()["fvqa/no_results"] == 1  # type: ignore[union-attr]


def test_a_pickle_naming_a_foreign_class_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "odd.pkl"
    release = {
        "fvqa_1": {"tool_returned_web_title_list": ["t"], "tool_returned_images_urls": [Path("x")]}
    }
    path.write_bytes(pickle.dumps(release))
    with pytest.raises(UnsafePickleError, match="refusing to load pathlib"):
        load_release(path)


def test_cli_reports_coverage(tmp_path: Path) -> None:
    pkl = tmp_path / "r.pkl"
    pkl.write_bytes(pickle.dumps(_release("http://127.0.0.1:9")))
    ids = tmp_path / "ids.jsonl"
    ids.write_text("".join(json.dumps({"data_id": f"fvqa_train_{i}"}) + "\n" for i in range(1, 7)))
    args = ["search", "convert-fvqa-cache", str(pkl), str(tmp_path / "o"), "--ids", str(ids)]
    done = subprocess.run(
        [sys.executable, "-m", "mmsr.cli", *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["ids_missing"] == 2
    assert "coverage: 2 ids with results, 4 without" in done.stderr


def _with_id(data_id: str) -> Image.Image:
    image = Image.new("RGB", (4, 4))
    image.info["data_id"] = data_id
    return image
