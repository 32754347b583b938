"""The fvqa backend: a release pickle built here is converted once, then served; a malicious
pickle is refused without running anything."""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from mmsr.search.base import SearchError
from mmsr.search.fvqa.backend import FvqaImageSearch
from mmsr.search.fvqa.convert import UnsafePickleError, convert_release, load_release, to_image
from mmsr.search.registry import build_search


def _png(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (5, 4), color).save(buffer, format="PNG")
    return buffer.getvalue()


def _entry(titles: list[str], thumbs: list[Any]) -> dict[str, list[Any]]:
    return {"tool_returned_web_title_list": titles, "tool_returned_images_urls": thumbs}


def _release() -> dict[str, Any]:
    """Release entries with every thumbnail kind the converter turns into pixels."""
    palette_image = Image.new("P", (3, 3), 1)
    palette_image.putpalette([0, 0, 0, 250, 10, 20] + [0] * 762)
    return {
        "fvqa_train_1": _entry(
            ["Tower Bridge - Wikipedia", "London sights"],
            [Image.new("RGB", (6, 4), (200, 10, 10)), palette_image],
        ),
        "fvqa_train_2": _entry(["Tagus", "No picture"], [_png((0, 0, 255)), None]),
        "fvqa_train_3": _entry(["only a title"], []),
    }


@pytest.fixture(params=[2, 4, 5], ids=lambda p: f"protocol{p}")
def release_pickle(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    path = tmp_path / "fvqa_results.pkl"
    path.write_bytes(pickle.dumps(_release(), protocol=request.param))
    return path


def test_convert_then_serve(release_pickle: Path, tmp_path: Path) -> None:
    counts = convert_release(release_pickle, tmp_path / "safe")
    assert (counts["entries"], counts["hits"], counts["ids_with_results"]) == (3, 5, 3)
    assert (counts["thumbnails"], counts["bad_thumbnails"]) == (3, 0)
    search = FvqaImageSearch(tmp_path / "safe")
    query = Image.new("RGB", (10, 10))
    query.info["data_id"] = "fvqa_train_1"
    hits = search.search(query, 5)
    assert [h.title for h in hits] == ["Tower Bridge - Wikipedia", "London sights"]
    assert hits[0].thumbnail.getpixel((0, 0)) == (200, 10, 10)
    assert hits[1].thumbnail.convert("RGB").getpixel((0, 0)) == (250, 10, 20)  # palette kept
    second = search.search_id("fvqa_train_2", 1)
    assert [(h.title, h.url) for h in second] == [("Tagus", "")]  # the release has no urls
    assert second[0].thumbnail.getpixel((0, 0)) == (0, 0, 255)
    assert search.search_id("fvqa_train_3", 3)[0].thumbnail is None


def test_unknown_or_missing_data_id_is_a_search_error(release_pickle: Path, tmp_path: Path) -> None:
    convert_release(release_pickle, tmp_path / "safe")
    backends = build_search({"backend": "fvqa", "path": str(tmp_path / "safe")})
    assert backends.text is None and backends.image is not None
    with pytest.raises(SearchError, match="no released image-search results"):
        backends.image.search(_with_id("fvqa_test_9"), 3)
    with pytest.raises(SearchError, match=r"image.info\['data_id'\]"):
        backends.image.search(Image.new("RGB", (4, 4)), 3)


def _with_id(data_id: str) -> Image.Image:
    image = Image.new("RGB", (4, 4))
    image.info["data_id"] = data_id
    return image


class _RunsShell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


class _Evaluates:
    def __reduce__(self) -> tuple[Any, ...]:
        return (eval, ("1 + 1",))


MALICIOUS = [
    # runs a shell command on load
    ("shell", lambda marker: {"fvqa_1": _entry(["x"], [_RunsShell(marker)])}),
    # calls eval on load
    ("eval", lambda marker: {"fvqa_1": [_Evaluates()]}),
    # smuggles in a callable from Pillow that is not an image class
    ("pil-open", lambda marker: {"fvqa_1": Image.open}),
]


@pytest.mark.parametrize(("name", "payload"), MALICIOUS, ids=[m[0] for m in MALICIOUS])
def test_malicious_pickles_are_refused(name: str, payload: Any, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(payload(marker), protocol=4))
    with pytest.raises(UnsafePickleError, match="refusing to load"):
        load_release(path)
    with pytest.raises(UnsafePickleError):
        convert_release(path, tmp_path / "out")
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_oversized_pickled_image_is_refused_before_pixels_are_made(tmp_path: Path) -> None:
    path = tmp_path / "big.pkl"
    path.write_bytes(pickle.dumps({"fvqa_1": _entry(["t"], [Image.new("L", (2, 2))])}))
    captured = load_release(path)["fvqa_1"]["tool_returned_images_urls"][0]
    assert to_image(captured).size == (2, 2)
    captured.state[2] = (60_000, 60_000)  # what a hostile pickle would claim
    with pytest.raises(ValueError, match="too large"):
        to_image(captured)


def test_unreadable_thumbnails_are_dropped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "r.pkl"
    path.write_bytes(pickle.dumps({"fvqa_1": _entry(["t"], [b"not an image"])}))
    counts = convert_release(path, tmp_path / "out")
    assert (counts["hits"], counts["bad_thumbnails"]) == (1, 1)
    assert FvqaImageSearch(tmp_path / "out").search_id("fvqa_1", 1)[0].thumbnail is None


def test_cli_converts(release_pickle: Path, tmp_path: Path) -> None:
    args = [
        "-m",
        "mmsr.cli",
        "search",
        "convert-fvqa-cache",
        str(release_pickle),
        str(tmp_path / "o"),
    ]
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["entries"] == 3
    assert (tmp_path / "o" / "results.jsonl").is_file()
