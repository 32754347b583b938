"""The registry of data formats (one explicit dict) and format detection.

A format is a converter from one raw record to ``Sample`` records; the container (parquet,
JSONL or a JSON array) is chosen by the file's suffix, so every format can be stored in any of
them. Detection looks at parquet column names or at the first JSON record's keys.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmsr.data.benchmarks import (
    infoseek_sample,
    livevqa_samples,
    mmsearch_sample,
    simplevqa_sample,
)
from mmsr.data.fvqa import fvqa_sample, world_sample
from mmsr.data.images import LoadContext
from mmsr.data.readers import (
    RawRow,
    first_record,
    json_rows,
    jsonl_rows,
    parquet_columns,
    parquet_rows,
)
from mmsr.data.schema import DataError
from mmsr.types import Sample

Converter = Callable[[Mapping[str, Any], LoadContext], list[Sample]]


@dataclass(frozen=True)
class DataFormat:
    """A named converter and the keys that identify its records."""

    name: str
    convert: Converter
    help: str


FORMATS: dict[str, DataFormat] = {
    "fvqa": DataFormat("fvqa", fvqa_sample, "FVQA / veRL parquet (also flat JSONL exports)"),
    "world": DataFormat("world", world_sample, "mmsr world parquet: FVQA plus search labels"),
    "infoseek": DataFormat("infoseek", infoseek_sample, "InfoSeek jsonl + image folder"),
    "mmsearch": DataFormat("mmsearch", mmsearch_sample, "MMSearch end2end parquet"),
    "simplevqa": DataFormat("simplevqa", simplevqa_sample, "SimpleVQA parquet or json"),
    "livevqa": DataFormat("livevqa", livevqa_samples, "LiveVQA benchmark.json (2 QAs/item)"),
}

# Detection rules, first match wins: (format, keys that must all be present).
_DETECTION: tuple[tuple[str, frozenset[str]], ...] = (
    ("world", frozenset({"reward_model", "search_need"})),
    ("fvqa", frozenset({"reward_model"})),
    ("fvqa", frozenset({"question", "ground_truth"})),
    ("livevqa", frozenset({"level1_qa"})),
    ("infoseek", frozenset({"image_id", "answer_eval"})),
    ("infoseek", frozenset({"image_id", "answer", "data_id"})),
    ("mmsearch", frozenset({"gt_answer", "query"})),
    ("simplevqa", frozenset({"vqa_category"})),
    ("simplevqa", frozenset({"atomic_fact"})),
)

PARQUET_SUFFIXES = (".parquet", ".pq")
JSON_SUFFIXES = (".jsonl", ".json")


def rows_of(path: Path) -> Iterator[RawRow]:
    """The raw records of a file, by its suffix."""
    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        return parquet_rows(path)
    if suffix == ".jsonl":
        return jsonl_rows(path)
    if suffix == ".json":
        return json_rows(path)
    raise DataError(path, None, None, f"unknown file type {suffix!r} (parquet, jsonl or json)")


def detect_format(path: Path) -> str:
    """The registered format of ``path``, from its columns or its first record's keys."""
    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        keys = set(parquet_columns(path))
    elif suffix in JSON_SUFFIXES:
        record = first_record(path)
        keys = set(record) if record else set()
    else:
        raise DataError(path, None, None, f"unknown file type {suffix!r} (parquet, jsonl or json)")
    for name, needed in _DETECTION:
        if needed <= keys:
            return name
    shown = ", ".join(sorted(keys)[:12]) or "none"
    raise DataError(
        path,
        None,
        None,
        f"cannot tell the format from its fields ({shown}); pass one of {', '.join(FORMATS)}",
    )


def get_format(name: str) -> DataFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown data format {name!r}; known: {', '.join(FORMATS)}") from None
