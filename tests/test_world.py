"""``mmsr world build``: determinism, splits, schema, corpus and the font fallback.

Built once per module with ``small=True`` (a few dozen entities, well under a second); the full
build runs behind ``-m slow``.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from PIL import Image

from mmsr.world.build import BuildConfig, build_world, load_world
from mmsr.world.sources import find_noto_font

EXTRA_COLUMNS = ["search_need", "question_type", "entity", "knowledge", "hops"]
FVQA_COLUMNS = ["prompt", "images", "reward_model", "data_source", "data_id", "category"]


def _build(out: Path, **kwargs: Any) -> dict[str, Any]:
    return build_world(BuildConfig(out=out, small=True, **kwargs))


def _rows(world: Path, split: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = pq.read_table(world / f"{split}.parquet").to_pylist()
    return rows


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("world") / "w"
    _build(out, seed=7)
    return out


def test_same_seed_gives_identical_bytes(world: Path, tmp_path: Path) -> None:
    _build(tmp_path / "again", seed=7)
    first, second = _files(world), _files(tmp_path / "again")
    assert sorted(first) == sorted(second)
    differing = [name for name in first if first[name] != second[name]]
    assert differing == []


def test_other_seed_changes_the_world(world: Path, tmp_path: Path) -> None:
    _build(tmp_path / "other", seed=8)
    assert (world / "train.parquet").read_bytes() != (tmp_path / "other/train.parquet").read_bytes()


def test_rebuild_in_place_replaces_the_previous_world(tmp_path: Path) -> None:
    out = tmp_path / "w"
    _build(out, seed=7)
    (out / "corpus" / "images" / "stale.png").write_bytes(b"x")
    _build(out, seed=7)
    assert not (out / "corpus" / "images" / "stale.png").exists()


def test_refuses_a_foreign_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        _build(tmp_path, seed=7)


def test_train_and_test_share_no_question(world: Path) -> None:
    train, test = _rows(world, "train"), _rows(world, "test")
    assert train and test
    assert not {r["data_id"] for r in train} & {r["data_id"] for r in test}
    # The same entity may appear in both splits, but never with the same question type.
    pairs = [{(r["entity"], r["question_type"]) for r in rows} for rows in (train, test)]
    assert not pairs[0] & pairs[1]
    images = [{r["images"][0]["bytes"] for r in rows} for rows in (train, test)]
    assert not images[0] & images[1]


def test_both_categories_and_five_question_types(world: Path) -> None:
    for split in ("train", "test"):
        assert {r["category"] for r in _rows(world, split)} == {"search_free", "search_required"}
    rows = _rows(world, "train") + _rows(world, "test")
    assert len({r["question_type"] for r in rows}) >= 5
    assert {r["search_need"] for r in rows} == {"none", "image", "text", "both"}
    assert {r["hops"] for r in rows} == {1, 2}


def test_rows_follow_the_fvqa_schema(world: Path) -> None:
    table = pq.read_table(world / "train.parquet")
    assert table.column_names == FVQA_COLUMNS + EXTRA_COLUMNS
    for row in table.to_pylist():
        assert row["data_source"] == "mmsr_world"
        assert [m["role"] for m in row["prompt"]] == ["user"]
        assert row["prompt"][0]["content"].endswith("?")
        reward = row["reward_model"]
        assert isinstance(reward["candidate_answers"], str)
        candidates = json.loads(reward["candidate_answers"])
        assert candidates[0] == reward["ground_truth"] and reward["style"] == "rule"
        assert len(row["images"]) == 1
        image = Image.open(io.BytesIO(row["images"][0]["bytes"]))
        image.load()
        assert image.size == (224, 224)
        # The category follows from the knowledge label; the need from the hops.
        assert (row["category"] == "search_free") == (row["knowledge"] == "head")
        assert (row["search_need"] == "none") == (row["knowledge"] == "head")
        if row["search_need"] == "both":
            assert row["hops"] == 2


def test_corpus_pages_and_images(world: Path) -> None:
    corpus = world / "corpus"
    pages = [json.loads(line) for line in (corpus / "pages.jsonl").read_text().splitlines()]
    assert len({p["id"] for p in pages}) == len(pages)
    for page in pages:
        assert set(page) <= {"id", "title", "url", "text", "image", "more_images"}
        assert page["title"] and page["text"] and page["url"].startswith("https://")
        for picture in [page.get("image"), *page.get("more_images", [])]:
            if picture is not None:
                Image.open(corpus / picture).load()
    entities = [json.loads(x) for x in (world / "entities.jsonl").read_text().splitlines()]
    by_title = {p["title"]: p for p in pages}
    for ent in entities:
        assert "image" in by_title[ent["name"]]
    # the web's second picture of a thing: its Noto drawing, where the font draws it
    seconds = [p for p in pages if p.get("more_images")]
    stats = json.loads((world / "stats.json").read_text())
    if stats["query_images"]["font_found"]:
        fallback = stats["query_images"]["twemoji_fallback_entities"]
        assert len(seconds) == len(entities) - fallback
        assert all(p["more_images"] == [f"images/{p['id']}.noto.png"] for p in seconds)
    else:
        assert not seconds
    assert len(pages) > len(entities)  # distractor pages exist
    assert (corpus / "images").is_dir()


def _answers_missing_from_pages(world: Path) -> list[str]:
    pages = {
        json.loads(line)["id"]: json.loads(line)
        for line in (world / "corpus" / "pages.jsonl").read_text().splitlines()
    }
    missing = []
    for row in _rows(world, "train") + _rows(world, "test"):
        page = pages[row["entity"]]
        truth = row["reward_model"]["ground_truth"]
        if truth not in page["text"] and truth != page["title"]:
            missing.append(row["data_id"])
    return missing


def test_every_answer_is_on_its_entity_page(world: Path) -> None:
    """Naming questions are answered by the page title, fact questions by the page text."""
    assert _answers_missing_from_pages(world) == []


def test_entities_vocab_notice_and_stats(world: Path) -> None:
    entities = [json.loads(x) for x in (world / "entities.jsonl").read_text().splitlines()]
    assert {e["knowledge"] for e in entities} == {"head", "tail"}
    vocab = json.loads((world / "vocab.json").read_text())
    assert vocab == sorted(set(vocab))
    truths = {r["reward_model"]["ground_truth"] for r in _rows(world, "train")}
    assert truths | {e["name"] for e in entities} <= set(vocab)
    notice = (world / "NOTICE").read_text()
    for licence in ("CC BY-SA 4.0", "CC-BY 4.0", "Open Font License", "MIT"):
        assert licence in notice
    stats = json.loads((world / "stats.json").read_text())
    assert stats["entities"]["total"] == len(entities)
    n_rows = len(_rows(world, "train")) + len(_rows(world, "test"))
    assert stats["questions"]["total"] == n_rows


def test_load_world_gives_the_written_entities(world: Path) -> None:
    entities, distractors = load_world(BuildConfig(out=world, small=True, seed=7))
    written = [json.loads(x) for x in (world / "entities.jsonl").read_text().splitlines()]
    assert [(e.id, e.knowledge) for e in entities] == [(w["id"], w["knowledge"]) for w in written]
    assert len(distractors) == 60


def test_missing_font_falls_back_to_twemoji_and_says_so(
    world: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING"):
        stats = _build(tmp_path / "w", seed=7, font=tmp_path / "missing.ttf")
    assert "font not found" in caplog.text
    assert stats["query_images"]["style"] == "twemoji"
    assert stats["query_images"]["twemoji_fallback_entities"] == stats["entities"]["total"]
    row = _rows(tmp_path / "w", "test")[0]
    Image.open(io.BytesIO(row["images"][0]["bytes"])).load()
    if find_noto_font() is not None:  # then the default build drew with Noto: other pixels
        noto = {r["data_id"]: r["images"][0]["bytes"] for r in _rows(world, "test")}
        assert noto[row["data_id"]] != row["images"][0]["bytes"]


def test_noto_is_used_when_installed(world: Path) -> None:
    if find_noto_font() is None:
        pytest.skip("fonts-noto-color-emoji is not installed")
    stats = json.loads((world / "stats.json").read_text())
    assert stats["query_images"]["style"] == "noto"
    assert stats["query_images"]["twemoji_fallback_entities"] == 0


def test_cli_builds_a_small_world(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "mmsr.cli", "world", "build", "--out", str(tmp_path / "w")]
    done = subprocess.run(
        [*cmd, "--seed", "3", "--small", "--quiet"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "w" / "stats.json").read_text())["seed"] == 3
    assert "world written to" in done.stdout


@pytest.mark.slow
def test_full_build_counts_time_and_determinism(tmp_path: Path) -> None:
    start = time.perf_counter()
    stats = build_world(BuildConfig(out=tmp_path / "a", seed=7))
    assert time.perf_counter() - start < 120
    assert 450 <= stats["entities"]["total"] <= 620
    assert 150 <= stats["entities"]["by_kind"]["flag"] <= 250
    assert stats["pages"]["total"] > 9000
    assert stats["questions"]["total"] > 1500
    assert _answers_missing_from_pages(tmp_path / "a") == []
    build_world(BuildConfig(out=tmp_path / "b", seed=7))
    for name in ("train.parquet", "test.parquet", "corpus/pages.jsonl", "vocab.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
