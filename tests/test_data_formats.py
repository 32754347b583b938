"""One conformance check over every registered format: detected from its own file, loaded,
exported to veRL parquet and read back unchanged. A new format without a fixture here fails."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from _data_builders import image_bytes, world_row, write_jsonl, write_parquet, write_world

from mmsr.data import FORMATS, detect_format, load_samples, write_verl_parquet


def _fvqa(d: Path) -> Path:
    (d / "f1.png").write_bytes(image_bytes())
    return write_jsonl(
        d / "fvqa.jsonl",
        [{"data_id": "f1", "question": "What is this?", "ground_truth": "A",
          "candidate_answers": ["A", "a1"], "category": "search_free",
          "images": [{"bytes": None, "path": "f1.png"}]}],
    )  # fmt: skip


def _world(d: Path) -> Path:
    return write_world(d / "world.parquet", [world_row(0), world_row(1)])


def _infoseek(d: Path) -> Path:
    (d / "oven_1.jpg").write_bytes(image_bytes(fmt="JPEG"))
    return write_jsonl(
        d / "infoseek.jsonl",
        [{"data_id": "i1", "image_id": "oven_1", "question": "How long is it?", "answer": ["3"],
          "answer_eval": [{"wikidata": 3.0, "range": [2.7, 3.3]}], "data_split": "val"}],
    )  # fmt: skip


def _mmsearch(d: Path) -> Path:
    return write_parquet(
        d / "mmsearch.parquet",
        [{"sample_id": "m1", "query": "Who is he?", "gt_answer": "Bo",
          "alternative_gt_answers": ["B."], "query_image": {"bytes": image_bytes(), "path": None},
          "area": "news", "subfield": "x", "timestamp": "2024"}],
    )  # fmt: skip


def _simplevqa(d: Path) -> Path:
    return write_parquet(
        d / "simplevqa.parquet",
        [{"data_id": 1, "image": {"bytes": image_bytes(), "path": None}, "question": "What?",
          "answer": "Cat", "language": "EN", "vqa_category": "animal"}],
    )  # fmt: skip


def _livevqa(d: Path) -> Path:
    qa = {
        "question": "Who is shown?",
        "question_type": "person",
        "options": ["A. Ann", "B. Bo"],
        "Ground_Truth": "B",
        "Ground_Truth_List": ["Bo", "Bobby"],
        "img_path": "n1.jpg",
    }
    (d / "n1.jpg").write_bytes(image_bytes(fmt="JPEG"))
    path = d / "live.json"
    path.write_text(json.dumps([{"id": "n1", "img_path": "n1.jpg", "level1_qa": qa,
                                 "level2_qa": qa, "source": "BBC", "time": "2025"}]))  # fmt: skip
    return path


BUILDERS: dict[str, Callable[[Path], Path]] = {
    "fvqa": _fvqa,
    "world": _world,
    "infoseek": _infoseek,
    "mmsearch": _mmsearch,
    "simplevqa": _simplevqa,
    "livevqa": _livevqa,
}


def test_every_format_has_a_fixture() -> None:
    assert set(BUILDERS) == set(FORMATS)


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_format_conformance(tmp_path: Path, name: str) -> None:
    path = BUILDERS[name](tmp_path)
    assert detect_format(path) == name
    samples = load_samples(path)
    assert samples, "a fixture must yield samples"
    for s in samples:
        assert s.id and s.question and s.answer and s.answer not in s.aliases
        assert s.image is not None  # every fixture ships a readable image
        json.dumps(dict(s.extra))  # extra holds plain JSON values only
    out = tmp_path / "out.parquet"
    write_verl_parquet(samples, out)
    assert load_samples(out) == samples
