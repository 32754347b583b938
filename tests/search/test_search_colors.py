"""Colour histograms of the local image search: what they count, and that they rank."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmsr.search.local.colors import COLOR_DIM, color_histogram, intersection
from mmsr.search.local.index import build_index
from mmsr.search.local.search import LocalImageSearch


def _stripes(colors: list[tuple[int, int, int]], side: int = 96) -> Image.Image:
    """A flag-like picture: horizontal stripes of ``colors``, opaque."""
    img = Image.new("RGBA", (side, side))
    band = side // len(colors)
    for i, c in enumerate(colors):
        img.paste((*c, 255), (0, i * band, side, side if i == len(colors) - 1 else (i + 1) * band))
    return img


RED, WHITE, GREEN, BLUE, YELLOW = (
    (220, 0, 0),
    (255, 255, 255),
    (0, 150, 0),
    (0, 0, 200),
    (250, 220, 0),
)

CASES = [
    # one colour: all the share in one cell
    (Image.new("RGBA", (128, 128), (*RED, 255)), 1, 1.0),
    # two colours in halves: two cells of about one half each (resizing blurs the border)
    (_stripes([RED, BLUE], 128), 2, 0.5),
    # transparent pixels are not counted: the opaque half alone fills its cell
    (_stripes([RED, (0, 0, 0)], 128).crop((0, 0, 128, 64)).crop((0, 0, 128, 128)), 1, 1.0),
]


@pytest.mark.parametrize(("image", "cells", "top"), CASES)
def test_histogram_counts_opaque_pixels_by_colour(
    image: Image.Image, cells: int, top: float
) -> None:
    h = color_histogram(image)
    assert h.shape == (COLOR_DIM,) and h.dtype == np.float32
    assert int((h > 0.1).sum()) == cells and float(h.max()) == pytest.approx(top, abs=0.05)
    assert float(h.sum()) == pytest.approx(1.0)


def test_a_fully_transparent_image_has_an_empty_histogram() -> None:
    assert not color_histogram(Image.new("RGBA", (8, 8))).any()


def test_intersection_is_the_shared_share() -> None:
    a, b = color_histogram(_stripes([RED, BLUE])), color_histogram(_stripes([RED, GREEN]))
    rows = np.stack([a, b, color_histogram(_stripes([YELLOW]))])
    # itself: 1; one stripe of two in common: 0.5; no colour in common: 0
    assert intersection(rows, a) == pytest.approx([1.0, 0.5, 0.0], abs=0.02)


def test_colours_tell_same_shaped_pictures_apart(tmp_path: Path) -> None:
    # three flags of the same layout that differ only in their colours
    flags = {
        "Redblue": [RED, WHITE, BLUE],
        "Greenwhite": [GREEN, WHITE, GREEN],
        "Yellow": [YELLOW, BLUE, YELLOW],
    }
    corpus = tmp_path / "c"
    (corpus / "img").mkdir(parents=True)
    lines = []
    for i, (title, colors) in enumerate(flags.items()):
        _stripes(colors, 72).save(corpus / "img" / f"{i}.png")
        row = {"id": f"p{i}", "title": title, "url": f"u{i}", "text": "t", "image": f"img/{i}.png"}
        lines.append(json.dumps(row))
    (corpus / "pages.jsonl").write_text("\n".join(lines) + "\n")
    build_index(corpus, tmp_path / "idx")
    search = LocalImageSearch(tmp_path / "idx")  # with color_weight 0 this test fails
    for title, colors in flags.items():
        # the query: the flag turned and shrunk onto a plain grey background
        query = Image.new("RGB", (112, 112), (128, 128, 128))
        flag = _stripes(colors, 72).rotate(12, expand=True)
        query.paste(flag, (14, 10), flag)
        assert search.search(query, 3)[0].title == title
