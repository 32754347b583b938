"""Validation helpers shared by every loader: errors that name file, row and field; counters;
reading and checking fields of raw records.

A *raw record* is one row of a source file as plain Python values (a dict). Converters turn it
into ``Sample`` records with the ``require_*`` helpers below, which raise ``FieldError``; the
loader adds the file and row and turns it into a ``DataError`` (or skips the row).
Not here: reading files (``readers``), images (``images``), or the per-format field mappings
(``fvqa``, ``benchmarks``).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# Placeholders some releases put in the question text where the image goes.
_IMAGE_TAGS = re.compile(r"<image>|<\|image_pad\|>|<img>", re.IGNORECASE)


class FieldError(ValueError):
    """A field of one raw record is missing or malformed."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"field {field!r}: {message}")
        self.field = field
        self.message = message


class DataError(ValueError):
    """A row of a data file cannot be read; the message names the file, the row and the field."""

    def __init__(self, path: Path | str, row: int | None, field: str | None, message: str) -> None:
        where = str(path) if row is None else f"{path}: row {row}"
        what = message if field is None else f"field {field!r}: {message}"
        super().__init__(f"{where}: {what}")
        self.path = str(path)
        self.row = row
        self.field = field


@dataclass
class LoadStats:
    """What a load did: rows read, samples made, rows skipped, images dropped or missing.

    Mutable on purpose: the streaming loader fills it in as it goes.
    """

    rows: int = 0
    samples: int = 0
    skipped: int = 0
    bad_images: int = 0
    missing_images: int = 0

    def summary(self) -> str:
        return (
            f"{self.samples} samples from {self.rows} rows, {self.skipped} rows skipped, "
            f"{self.bad_images} corrupt images dropped, {self.missing_images} images missing"
        )


def get_field(record: Mapping[str, Any], dotted: str) -> Any:
    """The value at ``a.b.c`` in nested mappings, or ``None`` where any step is absent."""
    value: Any = record
    for key in dotted.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def require_str(record: Mapping[str, Any], dotted: str, *, allow_empty: bool = False) -> str:
    """A string field; numbers are accepted and turned into text (some ids are integers)."""
    value = get_field(record, dotted)
    if value is None:
        raise FieldError(dotted, "missing")
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise FieldError(dotted, f"expected a string, got {type(value).__name__}")
    text = str(value).strip()
    if not text and not allow_empty:
        raise FieldError(dotted, "empty")
    return text


def optional_str(record: Mapping[str, Any], dotted: str) -> str | None:
    """A string field that may be absent (``None``); present but not text is an error."""
    if get_field(record, dotted) is None:
        return None
    return require_str(record, dotted, allow_empty=True) or None


def string_list(value: Any, field: str) -> list[str]:
    """A list of answers: a list of strings, or a JSON string holding one (FVQA's parquet)."""
    if value is None:
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise FieldError(field, f"not valid JSON ({err.msg})") from None
    if not isinstance(value, list | tuple):
        raise FieldError(field, f"expected a list of strings, got {type(value).__name__}")
    out: list[str] = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            raise FieldError(field, f"expected strings, got {type(item).__name__}")
        out.append(str(item).strip())
    return [s for s in out if s]


def dedup_aliases(answer: str, candidates: list[str]) -> tuple[str, ...]:
    """The candidates in order, without repeats and without the answer itself."""
    seen = {answer}
    out: list[str] = []
    for cand in candidates:
        if cand not in seen:
            seen.add(cand)
            out.append(cand)
    return tuple(out)


def clean_question(text: str) -> str:
    """The question without image placeholders (``<image>``) and with tidy white space."""
    return " ".join(_IMAGE_TAGS.sub(" ", text).split())


def json_safe(value: Any) -> Any:
    """``value`` if it is plain JSON data (so it can travel in ``Sample.extra``), else its text."""
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return str(value)
    return value
