"""The corpus folder the local index is built from: ``pages.jsonl`` plus image files.

One page a line: ``{"id": str, "title": str, "url": str, "text": str, "image": str?,
"more_images": [str]?}``; ``image`` (the page's picture, returned as the hit's thumbnail) and
``more_images`` (further pictures of the same thing on the page, which the image search also
matches) are paths relative to the corpus folder and must stay inside it. A bad row raises
``CorpusError`` naming the file, the line and the field, or, with ``skip_bad=True``, is
skipped and counted. ``Page`` is the record both ways: the offline world writes its corpus
with ``Page.to_json`` and the index reads it back with ``read_corpus``. Not here: reading the
images themselves (the index builder does, and survives corrupt ones).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

PAGES_FILE = "pages.jsonl"
REQUIRED_FIELDS = ("id", "title", "url", "text")


class CorpusError(ValueError):
    """A corpus row is malformed; the message names file, line and field."""


@dataclass(frozen=True)
class Page:
    """One page of the corpus: one line of ``pages.jsonl``.

    Its picture paths are relative to the corpus folder in a page to be written, absolute in a
    page ``read_corpus`` returns (resolved there, and checked to stay inside the folder)."""

    id: str
    """Unique within the corpus."""
    title: str
    """Shown as the hit's title."""
    url: str
    """Shown as the hit's url."""
    text: str
    """Body text that BM25 indexes and summaries are cut from."""
    image: Path | None = None
    """The page's picture, if it has one."""
    more_images: tuple[Path, ...] = ()
    """Further pictures of the page's subject, e.g. a second drawing (only with ``image``)."""

    @property
    def pictures(self) -> tuple[Path, ...]:
        """Every picture of the page, its own ``image`` first."""
        return () if self.image is None else (self.image, *self.more_images)

    def to_json(self) -> dict[str, Any]:
        """The page as a ``pages.jsonl`` row (optional fields only when set)."""
        row: dict[str, Any] = {"id": self.id, "title": self.title, "url": self.url}
        row["text"] = self.text
        if self.image is not None:
            row["image"] = self.image.as_posix()
        if self.more_images:
            row["more_images"] = [path.as_posix() for path in self.more_images]
        return row


@dataclass(frozen=True)
class Corpus:
    """The pages read from a corpus folder, and how many bad rows were skipped."""

    pages: tuple[Page, ...]
    """In file order."""
    skipped: int
    """Bad rows left out (only with ``skip_bad``)."""


def read_corpus(folder: str | Path, *, skip_bad: bool = False) -> Corpus:
    """All pages of ``folder/pages.jsonl``; duplicate ids are bad rows too."""
    root = Path(folder).resolve()
    path = root / PAGES_FILE
    if not path.is_file():
        raise CorpusError(f"{path}: no such file (a corpus folder holds {PAGES_FILE})")
    pages: list[Page] = []
    seen: set[str] = set()
    skipped = 0
    for line_no, line in _lines(path):
        try:
            page = parse_row(line, root=root, where=f"{path}:{line_no}")
            if page.id in seen:
                raise CorpusError(f"{path}:{line_no}: field 'id': duplicate id {page.id!r}")
        except CorpusError as err:
            if not skip_bad:
                raise
            logger.warning("skipping bad row: %s", err)
            skipped += 1
            continue
        seen.add(page.id)
        pages.append(page)
    if skipped:
        logger.warning("%s: skipped %d bad row(s)", path, skipped)
    return Corpus(pages=tuple(pages), skipped=skipped)


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if line.strip():
                yield line_no, line


def parse_row(line: str, *, root: Path, where: str) -> Page:
    """One JSON line as a ``Page``; ``where`` ("file:line") prefixes every error."""
    try:
        row: Any = json.loads(line)
    except json.JSONDecodeError as err:
        raise CorpusError(f"{where}: not valid JSON ({err.msg})") from err
    if not isinstance(row, dict):
        raise CorpusError(f"{where}: a row must be a JSON object, got {type(row).__name__}")
    for name in REQUIRED_FIELDS:
        if name not in row:
            raise CorpusError(f"{where}: field {name!r} is missing")
        if not isinstance(row[name], str):
            raise CorpusError(f"{where}: field {name!r} must be a string")
    if not row["id"].strip():
        raise CorpusError(f"{where}: field 'id' is empty")
    unknown = sorted(set(row) - {*REQUIRED_FIELDS, "image", "more_images"})
    if unknown:
        raise CorpusError(f"{where}: unknown field(s) {', '.join(map(repr, unknown))}")
    return Page(
        id=row["id"],
        title=row["title"],
        url=row["url"],
        text=row["text"],
        image=_image_path(row.get("image"), root=root, where=where),
        more_images=_more_images(row, root=root, where=where),
    )


def _more_images(row: dict[str, Any], *, root: Path, where: str) -> tuple[Path, ...]:
    value = row.get("more_images")
    if value is None:
        return ()
    if not isinstance(value, list):
        raise CorpusError(f"{where}: field 'more_images' must be a list of string paths")
    if value and row.get("image") is None:
        raise CorpusError(f"{where}: field 'more_images' needs the page's own 'image' first")
    return tuple(
        _image_path(item, root=root, where=where, name="more_images") or root for item in value
    )


def _image_path(value: Any, *, root: Path, where: str, name: str = "image") -> Path | None:
    if value is None and name == "image":
        return None
    if not isinstance(value, str) or not value.strip():
        raise CorpusError(f"{where}: field {name!r} must hold non-empty string paths")
    path = (root / value).resolve()
    if not path.is_relative_to(root):
        raise CorpusError(f"{where}: field {name!r}: {value!r} points outside the corpus folder")
    return path
