"""The offline world's own search: a text search naming the entity and the fact finds the
fact's value in the hits' summaries, and the image search finds the pictured entity."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image

from mmsr.search.local.search import LocalImageSearch, LocalTextSearch
from mmsr.teacher.turns import FACT_WORDS
from mmsr.world.questions import TEMPLATES


def _rows(world: Path) -> list[dict]:
    return (
        pq.read_table(world / "train.parquet").to_pylist()
        + pq.read_table(world / "test.parquet").to_pylist()
    )


def test_a_text_search_for_a_fact_finds_its_value_in_the_summaries(
    small_world: tuple[Path, Path],
) -> None:
    world, index = small_world
    templates = {t.id: t for t in TEMPLATES}
    entities = {
        e["id"]: e for e in map(json.loads, (world / "entities.jsonl").read_text().splitlines())
    }
    search = LocalTextSearch(index)
    asked = found = 0
    for row in _rows(world):
        fact = templates[row["question_type"]].fact
        if fact is None:
            continue
        query = f"{entities[row['entity']]['name']} {FACT_WORDS[fact]}"
        hits = search.search(query, 5, question=row["prompt"][0]["content"])
        asked += 1
        found += any(row["reward_model"]["ground_truth"] in hit.summary for hit in hits)
    assert asked > 20 and found == asked


def test_the_image_search_finds_the_pictured_entity_first(
    small_world: tuple[Path, Path],
) -> None:
    world, index = small_world
    search = LocalImageSearch(index)
    url = {e["id"]: e["url"] for e in map(json.loads, (world / "entities.jsonl").open())}
    rows = pq.read_table(world / "test.parquet").to_pylist()
    first = 0
    for row in rows:
        with Image.open(io.BytesIO(row["images"][0]["bytes"])) as image:
            first += search.search(image.convert("RGB"), 5)[0].url == url[row["entity"]]
    assert first / len(rows) >= 0.9
