"""Validation: bad rows name file, row and field (or are skipped and counted); corrupt images
are dropped to ``None`` and counted, never a crash."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from _data_builders import image_bytes, world_row, write_jsonl, write_parquet, write_world

from mmsr.data import FORMATS, DataError, DataFormat, LoadStats, iter_samples, load_samples
from mmsr.types import Sample

GOOD = {"question": "What is this?", "ground_truth": "A", "data_id": "ok"}


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ({"question": "q"}, "ground_truth"),  # answer missing
        ({"question": "", "ground_truth": "a"}, "question"),  # empty question
        ({"question": "q", "ground_truth": ["a"]}, "ground_truth"),  # answer not text
        ({"question": "q", "ground_truth": "a", "candidate_answers": "[oops"},
         "candidate_answers"),  # candidates: broken JSON string
        ({"question": "q", "ground_truth": "a", "candidate_answers": [{"x": 1}]},
         "candidate_answers"),  # candidates: not strings
        ({"question": "q", "ground_truth": "a", "category": "maybe"}, "category"),  # label
        ({"question": "q", "ground_truth": "a", "images": [{"bytes": "xx"}]},
         "images[0].bytes"),  # image bytes of the wrong type
        ("not json at all", "<row>"),  # unparseable line
    ],
)  # fmt: skip
def test_bad_fvqa_row_names_file_row_field(tmp_path: Path, record: Any, field: str) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", [GOOD, GOOD, record])
    with pytest.raises(DataError) as info:
        load_samples(path, format="fvqa")
    err = info.value
    assert (err.path, err.row, err.field) == (str(path), 2, field)
    assert str(path) in str(err) and "row 2" in str(err) and field in str(err)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"search_need": "sometimes"}, "search_need"),  # not a known need
        ({"knowledge": None}, "knowledge"),  # label missing
        ({"hops": 3}, "hops"),  # out of range
        ({"category": None}, "category"),  # the world always labels
        ({"category": "search_required", "search_need": "none"}, "search_need"),  # contradiction
        ({"prompt": []}, "prompt"),  # no message
        ({"prompt": [{"role": "user", "content": "<image> "}]}, "prompt[0].content"),  # empty
        ({"prompt": [{"role": "system", "content": "hi"}]}, "prompt"),  # no user message
        ({"reward_model": {"ground_truth": "x", "candidate_answers": "{}", "style": "rule"}},
         "reward_model.candidate_answers"),  # a JSON object, not a list
    ],
)  # fmt: skip
def test_bad_world_row(tmp_path: Path, overrides: dict[str, Any], field: str) -> None:
    path = write_world(tmp_path / "w.parquet", [world_row(0), world_row(1, **overrides)])
    with pytest.raises(DataError) as info:
        load_samples(path)
    assert (info.value.row, info.value.field) == (1, field)


@pytest.mark.parametrize(
    "labels",
    ['"just text"', "[1, 2]", "{broken"],  # a string, a list, broken JSON: never a crash
)
def test_bad_extra_info_labels(tmp_path: Path, labels: str) -> None:
    row = {"prompt": [{"role": "user", "content": "q"}], "reward_model": {"ground_truth": "a"},
           "extra_info": {"index": 0, "labels": labels}}  # fmt: skip
    with pytest.raises(DataError) as info:
        load_samples(write_parquet(tmp_path / "v.parquet", [row]))
    assert (info.value.row, info.value.field) == (0, "extra_info.labels")


@pytest.mark.parametrize(
    ("fmt", "record", "field"),
    [
        ("infoseek", {"data_id": "v", "image_id": "o", "question": "q", "answer": [],
                      "answer_eval": [{"wikidata": 1, "range": [2, 1]}]},
         "answer_eval[0].range"),  # range upside down
        ("infoseek", {"data_id": "v", "question": "q", "answer": ["a"]}, "image_id"),
        ("mmsearch", {"sample_id": "s", "query": "q"}, "gt_answer"),
        ("livevqa", {"id": "n", "level1_qa": {"question": "q", "options": ["A. x"],
                     "Ground_Truth": "A", "Ground_Truth_List": ["x"]}}, "level2_qa"),
        ("livevqa", {"id": "n", "level1_qa": {"question": "q", "options": ["x"],
                     "Ground_Truth": "A", "Ground_Truth_List": []}}, "level1_qa.options"),
    ],
)  # fmt: skip
def test_bad_benchmark_rows(tmp_path: Path, fmt: str, record: dict, field: str) -> None:
    path = write_jsonl(tmp_path / "b.jsonl", [record])
    with pytest.raises(DataError) as info:
        load_samples(path, format=fmt)
    assert (info.value.row, info.value.field) == (0, field)


def test_skip_bad_counts_and_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_jsonl(tmp_path / "mixed.jsonl", [GOOD, {"question": "q"}, "{", GOOD])
    stats = LoadStats()
    with caplog.at_level(logging.WARNING, logger="mmsr.data"):
        samples = list(iter_samples(path, skip_bad=True, stats=stats))
    assert len(samples) == 2 and (stats.rows, stats.skipped) == (4, 2)
    assert "row 1" in caplog.text and "ground_truth" in caplog.text


def test_corrupt_image_is_dropped_and_counted(tmp_path: Path) -> None:
    rows = [
        world_row(0),
        world_row(1, images=[{"bytes": b"\xff\xd8 definitely not a jpeg", "path": "x.jpg"}]),
        world_row(2, images=[{"bytes": image_bytes()[:20], "path": None}]),  # truncated PNG
    ]
    path = write_world(tmp_path / "w.parquet", rows)
    stats = LoadStats()
    samples = list(iter_samples(path, stats=stats))
    assert len(samples) == 3  # the rows are kept …
    assert samples[0].image is not None
    assert samples[1].image is None and samples[1].image_path == "x.jpg"  # … without the image
    assert samples[2].image is None and stats.bad_images == 2
    unchecked = load_samples(path, check_images=False)  # the check can be turned off
    assert unchecked[1].image is not None


def test_missing_image_file_is_not_an_error(tmp_path: Path) -> None:
    row = world_row(0, images=[{"bytes": None, "path": "absent.png"}])
    stats = LoadStats()
    (s,) = iter_samples(write_world(tmp_path / "w.parquet", [row]), stats=stats)
    assert s.image is None and s.image_path == str(tmp_path / "absent.png")
    assert stats.missing_images == 1 and stats.bad_images == 0


def test_image_read_from_path_when_bytes_absent(tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "q.png").write_bytes(image_bytes())
    row = world_row(0, images=[{"bytes": None, "path": "q.png"}])
    (s,) = load_samples(write_world(tmp_path / "w.parquet", [row]), image_dir=tmp_path / "imgs")
    assert s.image == image_bytes()


def test_unreadable_parquet_names_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 garbage")
    with pytest.raises(DataError, match=r"broken\.parquet"):
        load_samples(path)


def test_json_array_of_non_objects(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text(json.dumps([GOOD, 5]))
    with pytest.raises(DataError, match="row 1"):
        load_samples(path, format="fvqa")


def test_parquet_with_odd_columns(tmp_path: Path) -> None:
    rows = [{"prompt": "not a list", "reward_model": {"ground_truth": "a"}}]
    with pytest.raises(DataError, match="'prompt'"):
        load_samples(write_parquet(tmp_path / "p.parquet", rows))


def test_unexpected_converter_errors_still_name_file_and_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fragile(record: dict[str, Any], ctx: object) -> list[Sample]:
        return [Sample(id=str(record["n"] + 1), question="q", answer="a")]  # TypeError on "x"

    monkeypatch.setitem(FORMATS, "fragile", DataFormat("fragile", fragile, "test only"))
    path = write_jsonl(tmp_path / "f.jsonl", [{"n": 1}, {"n": "x"}])
    with pytest.raises(DataError, match=r"row 1: unexpected value \(TypeError") as info:
        load_samples(path, format="fragile")
    assert isinstance(info.value.__cause__, TypeError)
    assert [s.id for s in load_samples(path, format="fragile", skip_bad=True)] == ["2"]
