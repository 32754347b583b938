"""``Sample`` records → veRL-ready parquet, in the layout of the official MMSearch-R1 files.

Columns: ``data_source``, ``prompt`` (one user message holding the question), ``images``
(``[{"bytes", "path"}]``, empty when the sample has none), ``reward_model`` (``ground_truth``,
``candidate_answers`` as a JSON *string*, ``style="rule"``), ``extra_info`` (``index``,
``data_id``, ``split``, and ``labels``: ``Sample.extra`` as a JSON string), plus ``data_id``
and ``category`` as in FVQA. ``load_samples`` reads the file back to the same samples.

The official files leave the ``<image>`` placeholder out of the question (their dataset code
prepends a prompt that holds it); stock veRL datasets want it in the text: ``image_token``.
Written in row groups while iterating, so exports of large datasets stay in bounded memory.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from mmsr.types import Sample

logger = logging.getLogger(__name__)

ROW_GROUP = 256


def write_rows_of(source: Path, samples: Sequence[Sample], out: Path) -> Path:
    """The rows of the parquet file ``source`` that hold ``samples`` (matched by ``data_id``),
    in the file's own columns and order, written to ``out`` through a temporary file; a
    sample without its own row there is an error."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(source)
    ids = pa.array([s.id for s in samples], type=pa.string())
    picked = table.filter(pc.is_in(table["data_id"], value_set=ids))
    if picked.num_rows != len(samples):
        raise ValueError(f"{source}: {picked.num_rows} rows for {len(samples)} questions")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    pq.write_table(picked, tmp)
    tmp.replace(out)
    return out


def fvqa_column_types() -> dict[str, Any]:
    """Arrow types of FVQA's ``prompt``, ``images`` and ``reward_model`` columns, with the
    field order of the released files (shared by the world's writer)."""
    import pyarrow as pa

    return {
        "prompt": pa.list_(pa.struct([("content", pa.string()), ("role", pa.string())])),
        "images": pa.list_(pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        "reward_model": pa.struct(
            [
                ("candidate_answers", pa.string()),
                ("ground_truth", pa.string()),
                ("style", pa.string()),
            ]
        ),
    }


def verl_schema() -> Any:
    import pyarrow as pa

    fvqa = fvqa_column_types()
    extra_info = pa.struct(
        [
            ("index", pa.int64()),
            ("data_id", pa.string()),
            ("split", pa.string()),
            ("labels", pa.string()),
        ]
    )
    return pa.schema(
        [
            ("data_source", pa.string()),
            ("prompt", fvqa["prompt"]),
            ("images", fvqa["images"]),
            ("reward_model", fvqa["reward_model"]),
            ("extra_info", extra_info),
            ("data_id", pa.string()),
            ("category", pa.string()),
        ]
    )


def verl_record(
    sample: Sample, index: int, *, split: str = "train", image_token: str | None = None
) -> dict[str, Any]:
    """One row of the veRL parquet for ``sample``."""
    question = sample.question
    if image_token and sample.image is not None:
        question = f"{image_token}{question}"
    images = []
    if sample.image is not None or sample.image_path is not None:
        images = [{"bytes": sample.image, "path": sample.image_path}]
    return {
        "data_source": sample.source,
        "prompt": [{"role": "user", "content": question}],
        "images": images,
        "reward_model": {
            "ground_truth": sample.answer,
            "candidate_answers": json.dumps(sample.golds, ensure_ascii=False),
            "style": "rule",
        },
        "extra_info": {
            "index": index,
            "data_id": sample.id,
            "split": split,
            "labels": json.dumps(dict(sample.extra), ensure_ascii=False, sort_keys=True),
        },
        "data_id": sample.id,
        "category": sample.category,
    }


def write_verl_parquet(
    samples: Iterable[Sample],
    out: Path | str,
    *,
    split: str = "train",
    image_token: str | None = None,
) -> int:
    """Write ``samples`` to ``out`` (created or replaced) and return how many were written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    schema = verl_schema()
    tmp = out.with_name(out.name + ".tmp")
    count = 0
    batch: list[dict[str, Any]] = []
    with pq.ParquetWriter(tmp, schema) as writer:
        for sample in samples:
            batch.append(verl_record(sample, count, split=split, image_token=image_token))
            count += 1
            if len(batch) >= ROW_GROUP:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                batch = []
        if batch or count == 0:
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))
    tmp.replace(out)  # a crash mid-export never leaves a truncated file under the real name
    logger.info("wrote %d samples to %s", count, out)
    return count
