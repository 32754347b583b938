"""Raw record readers: a data file as a stream of ``RawRow`` (row index + plain dict).

Parquet is read in record batches and JSONL line by line, so memory stays flat on large
files. A JSON array (LiveVQA ships one) is read whole: such files are small in practice.
Row numbers are 0-based positions in the file (for JSONL: the line number minus one).
Not here: what the fields mean (see ``fvqa`` and ``benchmarks``).
"""

from __future__ import annotations

import json
from collections.abc import Generator, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmsr.data.schema import DataError

PARQUET_BATCH_ROWS = 64  # small batches: rows carry whole images


@dataclass(frozen=True)
class RawRow:
    """One record of a file, or why it could not be parsed (``record`` is then ``None``)."""

    index: int
    record: dict[str, Any] | None
    error: str | None = None


def parquet_columns(path: Path) -> list[str]:
    """The top-level column names of a parquet file (reads only the footer)."""
    import pyarrow.parquet as pq

    try:
        return list(pq.ParquetFile(path).schema_arrow.names)
    except Exception as err:  # pyarrow raises several unrelated types for a broken file
        raise DataError(path, None, None, f"not a readable parquet file ({err})") from err


def parquet_rows(path: Path) -> Iterator[RawRow]:
    import pyarrow.parquet as pq

    try:
        pfile = pq.ParquetFile(path)
    except Exception as err:
        raise DataError(path, None, None, f"not a readable parquet file ({err})") from err
    index = 0
    for batch in pfile.iter_batches(batch_size=PARQUET_BATCH_ROWS):
        for record in batch.to_pylist():
            yield RawRow(index, record)
            index += 1


def jsonl_rows(path: Path) -> Generator[RawRow, None, None]:
    with path.open("r", encoding="utf-8") as handle:
        for index, line in enumerate(handle):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                # some messages end in "at" ("Unterminated string starting at"): one "at" only
                what = err.msg.removesuffix(" at")
                yield RawRow(index, None, f"not valid JSON ({what} at column {err.colno})")
                continue
            if not isinstance(record, dict):
                yield RawRow(index, None, f"expected a JSON object, got {type(record).__name__}")
                continue
            yield RawRow(index, record)


def json_rows(path: Path) -> Generator[RawRow, None, None]:
    """A JSON array of objects, or an object mapping ids to objects (id kept as ``_key``)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(path, None, None, f"not valid JSON ({err.msg}, line {err.lineno})") from err
    if isinstance(data, dict):
        items: list[Any] = [
            {**value, "_key": key} if isinstance(value, dict) else value
            for key, value in data.items()
        ]
    elif isinstance(data, list):
        items = data
    else:
        raise DataError(path, None, None, "expected a JSON array or object of records")
    for index, record in enumerate(items):
        if isinstance(record, dict):
            yield RawRow(index, record)
        else:
            yield RawRow(index, None, f"expected a JSON object, got {type(record).__name__}")


def first_record(path: Path) -> dict[str, Any] | None:
    """The first parseable record of a JSON/JSONL file (for format detection)."""
    with closing(jsonl_rows(path) if path.suffix == ".jsonl" else json_rows(path)) as rows:
        for row in rows:
            if row.record is not None:
                return row.record
    return None
