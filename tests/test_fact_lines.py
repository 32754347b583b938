"""A world whose pages state one fact a sentence (``--fact-layout lines``) and an index whose
summaries put the sentence that answers the query first (``--summary-order relevance``): a text
search for "<name> <fact word>" opens its first hit with the fact's own sentence, and the SFT
teacher's drills and quoting answers use the very same words."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from mmsr.search.local.index import IndexManifest, read_manifest
from mmsr.search.local.search import LocalTextSearch
from mmsr.search.local.summary import summarize
from mmsr.teacher.config import TeacherConfig
from mmsr.teacher.draw import Teacher
from mmsr.teacher.world_kit import WORLD_FILE, WorldKit, trained_world, world_config
from mmsr.types import Role
from mmsr.world.build import FACT_WORDS, fact_lines_text
from mmsr.world.questions import TEMPLATES


@pytest.fixture(scope="module")
def lines_world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("lines_world")
    world, index = root / "world", root / "index"
    build = ["world", "build", "--out", str(world), "--seed", "3", "--small", "--quiet"]
    index_build = ["index", "build", "--corpus", str(world / "corpus"), "--out", str(index)]
    for args in (
        [*build, "--fact-layout", "lines"],
        [*index_build, "--summary-order", "relevance", "--no-progress"],
    ):
        done = subprocess.run([sys.executable, "-m", "mmsr.cli", *args], capture_output=True)
        assert done.returncode == 0, done.stderr[-2000:]
    return world, index


def _entities(world: Path) -> dict[str, dict[str, Any]]:
    lines = (world / "entities.jsonl").read_text(encoding="utf-8").splitlines()
    return {e["id"]: e for e in map(json.loads, lines)}


def test_each_fact_has_its_own_sentence_named_as_a_query_names_it(
    lines_world: tuple[Path, Path],
) -> None:
    world, _ = lines_world
    pages = {
        p["id"]: p["text"]
        for p in map(json.loads, (world / "corpus" / "pages.jsonl").read_text().splitlines())
    }
    with_facts = [e for e in _entities(world).values() if e["facts"]]
    assert any(e["kind"] != "flag" for e in with_facts)  # living things' taxonomy too
    for entity in with_facts:
        text = pages[entity["id"]]
        for key, value in entity["facts"].items():
            assert f"{entity['name']} {FACT_WORDS[key]}: {value}." in text
        assert " in brief: " not in text
    stats = json.loads((world / "stats.json").read_text())
    assert stats["fact_layout"] == "lines"
    assert world_config(world).fact_layout == "lines"


def test_the_first_hit_opens_with_the_asked_facts_sentence(
    lines_world: tuple[Path, Path],
) -> None:
    world, index = lines_world
    entities = _entities(world)
    templates = {t.id: t for t in TEMPLATES}
    search = LocalTextSearch(index)
    assert search.summary_order == "relevance"
    asked = 0
    for row in pq.read_table(world / "train.parquet").to_pylist():
        fact = templates[row["question_type"]].fact
        if fact is None:
            continue
        entity = entities[row["entity"]]
        hits = search.search(f"{entity['name']} {FACT_WORDS[fact]}", 5, row["prompt"][0]["content"])
        value = row["reward_model"]["ground_truth"]
        assert hits[0].title == entity["name"]
        assert hits[0].summary.startswith(f"{entity['name']} {FACT_WORDS[fact]}: {value}.")
        asked += 1
    assert asked > 10


def test_summary_order_is_the_indexs_and_checked(
    lines_world: tuple[Path, Path], tmp_path: Path
) -> None:
    _, index = lines_world
    manifest = read_manifest(index)
    assert manifest.summary_order == "relevance"
    old = {k: v for k, v in asdict(manifest).items() if k != "summary_order"}
    (tmp_path / "manifest.json").write_text(json.dumps(old))
    assert read_manifest(tmp_path).summary_order == "page"  # indexes built before the setting
    bad = asdict(replace(manifest, summary_order="random"))
    (tmp_path / "manifest.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="summary_order"):
        read_manifest(tmp_path)
    assert IndexManifest.summary_order == "page"


def test_relevance_order_leads_with_the_best_sentence() -> None:
    text = "Peru is a country. Peru capital: Lima. Peru region: Americas."
    assert summarize(text, "peru region") == text  # page order
    lead = summarize(text, "peru region", order="relevance")
    assert lead == "Peru region: Americas. Peru is a country. Peru capital: Lima."
    with pytest.raises(ValueError, match="summary order"):
        summarize(text, "peru", order="shuffled")
    assert fact_lines_text("Peru", {"region": "Americas", "capital": "Lima"}) == (
        "Peru capital: Lima. Peru region: Americas."
    )


@pytest.mark.parametrize("kind", ["copy2", "prime2"])
def test_drills_quote_the_first_sentence_of_the_entitys_hit(
    lines_world: tuple[Path, Path], kind: str
) -> None:
    kit = WorldKit.open(*lines_world)
    assert (kit.fact_layout, kit.summary_order) == ("lines", "relevance")
    teacher = Teacher(kit, TeacherConfig(value_reason="quote", copy_first=1.0), seed=4)
    for _ in range(12):
        turns = teacher.draw(kind)
        results = [t.text for t in turns if t.role == Role.USER][-1]
        reason = turns[-1].text.split("<reason>The results say ", 1)[1].split("</reason>")[0]
        value = turns[-1].text.split("<answer>")[1].removesuffix("</answer>")
        assert reason.endswith(f": {value}.")
        assert f"\n{reason}" in results  # a hit's summary opens with the quoted sentence


@pytest.mark.parametrize("kind", ["copy2", "prime2"])
def test_fact_first_below_one_puts_the_asked_fact_among_the_others(
    lines_world: tuple[Path, Path], kind: str
) -> None:
    """``fact_first = 0``: the entity's own hit is summarised for its bare name, so the quoted
    sentence is still in it but often not its first; the default teacher's draws are those of
    ``fact_first = 1`` (no extra draw)."""
    kit = WorldKit.open(*lines_world)
    config = TeacherConfig(value_reason="quote", copy_first=1.0, fact_first=0.0)
    teacher = Teacher(kit, config, seed=4)
    leading = 0
    for _ in range(16):
        turns = teacher.draw(kind)
        results = [t.text for t in turns if t.role == Role.USER][-1]
        reason = turns[-1].text.split("<reason>The results say ", 1)[1].split("</reason>")[0]
        assert reason in results  # the page's own sentence, somewhere in the hits
        leading += f"\n{reason}" in results
    assert leading < 12  # mostly not the hit's first sentence
    default = Teacher(kit, TeacherConfig(value_reason="quote"), seed=4)
    explicit = Teacher(kit, TeacherConfig(value_reason="quote", fact_first=1.0), seed=4)
    for _ in range(6):
        assert default.draw(kind) == explicit.draw(kind)
    with pytest.raises(ValueError, match="fact_first"):
        TeacherConfig(fact_first=1.5)


def test_a_warm_start_names_the_world_it_was_trained_on(tmp_path: Path) -> None:
    from mmsr.demo.stages import index_stage, world_stage

    assert trained_world(tmp_path) == {"fact_layout": "brief", "summary_order": "page"}
    (tmp_path / WORLD_FILE).write_text('{"fact_layout": "lines", "summary_order": "relevance"}')
    trained = trained_world(tmp_path)
    assert trained == {"fact_layout": "lines", "summary_order": "relevance"}
    # the demo builds its world and index so, and logs the commands that do the same
    world = world_stage(tmp_path / "w", 7, False, trained["fact_layout"])
    index = index_stage(tmp_path / "w" / "corpus", tmp_path / "i", trained["summary_order"])
    assert world.command[-2:] == ("--fact-layout", "lines")
    assert index.command[-2:] == ("--summary-order", "relevance")
    for bad, message in (
        ('{"fact_layout": "tiles"}', "fact_layout must be one of"),
        ('{"seed": 3}', "expected an object with keys"),
        ("not json", "not JSON"),
    ):
        (tmp_path / WORLD_FILE).write_text(bad)
        with pytest.raises(ValueError, match=message):
            trained_world(tmp_path)
