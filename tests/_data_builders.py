"""Small data files built in tests: images, world-schema parquet, benchmark records."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

WORLD_SCHEMA = pa.schema(
    [
        ("prompt", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
        ("images", pa.list_(pa.struct([("bytes", pa.binary()), ("path", pa.string())]))),
        (
            "reward_model",
            pa.struct(
                [
                    ("ground_truth", pa.string()),
                    ("candidate_answers", pa.string()),
                    ("style", pa.string()),
                ]
            ),
        ),
        ("data_source", pa.string()),
        ("data_id", pa.string()),
        ("category", pa.string()),
        ("search_need", pa.string()),
        ("question_type", pa.string()),
        ("entity", pa.string()),
        ("knowledge", pa.string()),
        ("hops", pa.int64()),
    ]
)


def image_bytes(color: tuple[int, int, int] = (200, 30, 30), fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, format=fmt)
    return buf.getvalue()


def world_row(i: int, **overrides: Any) -> dict[str, Any]:
    """One world-schema row; ``overrides`` replace top-level columns."""
    free = i % 2 == 0
    row: dict[str, Any] = {
        "prompt": [{"role": "user", "content": f"<image>\nWhich country's flag is this? #{i}"}],
        "images": [{"bytes": image_bytes((i * 40 % 255, 10, 10)), "path": f"q{i}.png"}],
        "reward_model": {
            "ground_truth": f"Country{i}",
            "candidate_answers": json.dumps([f"Country{i}", f"C{i}"]),
            "style": "rule",
        },
        "data_source": "mmsr_world",
        "data_id": f"world-{i}",
        "category": "search_free" if free else "search_required",
        "search_need": "none" if free else ("image", "text", "both")[i % 3],
        "question_type": "flag_country",
        "entity": f"flag_{i}",
        "knowledge": "head" if free else "tail",
        "hops": 1 + (i % 2),
    }
    row.update(overrides)
    return row


def write_world(path: Path, rows: list[dict[str, Any]]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows, schema=WORLD_SCHEMA), path)
    return path


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def write_jsonl(path: Path, records: list[Any]) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
