"""Loaders: real fixtures, the world's parquet, the benchmarks' formats, detection, streaming."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from itertools import islice
from pathlib import Path

import pytest
from _data_builders import image_bytes, world_row, write_jsonl, write_parquet, write_world

from mmsr.data import FORMATS, LoadStats, detect_format, iter_samples, load_samples, open_image
from mmsr.rewards import exact_match

# ---- real third-party files -----------------------------------------------------------------


def test_mini_data_parquet(shared_samples: Path) -> None:
    samples = load_samples(shared_samples / "mmsearch_r1_mini_data" / "mini_data.pq")
    assert len(samples) == 5
    first = samples[0]
    assert first.question == "What is the country of origin of this food?"
    assert first.answer == "Spain"
    # candidate_answers is a JSON string there; the answer itself is not repeated as an alias
    assert "Kingdom of Spain" in first.aliases and "Spain" not in first.aliases
    assert first.source == "mmsearch_r1/infoseek_train_split"
    assert all(s.image is not None and s.image[:2] == b"\xff\xd8" for s in samples)  # JPEG
    assert len({s.id for s in samples}) == 5
    assert exact_match("kingdom of spain", first.golds)


def test_fvqa_train_50_jsonl(shared_samples: Path) -> None:
    path = shared_samples / "fvqa_train_samples" / "fvqa_train_50.jsonl"
    assert detect_format(path) == "fvqa"
    samples = load_samples(path)
    assert len(samples) == 50
    counts = {c: sum(s.category == c for s in samples) for c in ("search_free", "search_required")}
    assert counts == {"search_free": 25, "search_required": 25}
    bridge = next(s for s in samples if s.id == "fvqa_train_2759")
    assert bridge.answer == "Tagus River" and "Tejo" in bridge.aliases
    assert bridge.image is None and bridge.extra["image_width"] == 599


def test_livevqa_benchmark(shared_samples: Path) -> None:
    path = shared_samples / "livevqa" / "News_benchmark.json"
    assert detect_format(path) == "livevqa"
    stats = LoadStats()
    samples = list(iter_samples(path, stats=stats))
    assert stats.rows == 350 and len(samples) == 700  # a level-1 and a level-2 QA per item
    first, second = samples[0], samples[1]
    assert first.id.endswith("/level1") and second.id.endswith("/level2")
    assert first.extra["level"] == 1 and second.extra["level"] == 2
    # the answer is the text of the correct option; Ground_Truth_List entries are aliases
    letter = first.extra["answer_letter"]
    options = first.extra["options"]
    assert any(o.startswith(f"{letter}.") and o.endswith(first.answer) for o in options)
    # images were not copied: kept as a path, counted as missing, never a crash
    assert first.image is None and first.image_path is not None
    assert stats.missing_images == 700


# ---- the world's parquet --------------------------------------------------------------------


def test_world_parquet_keeps_labels(tmp_path: Path) -> None:
    path = write_world(tmp_path / "train.parquet", [world_row(i) for i in range(4)])
    assert detect_format(path) == "world"
    samples = load_samples(path)
    assert [s.id for s in samples] == ["world-0", "world-1", "world-2", "world-3"]
    s1 = samples[1]
    assert s1.question == "Which country's flag is this? #1"  # <image> placeholder stripped
    assert s1.category == "search_required" and s1.extra["search_need"] == "text"
    assert s1.extra["knowledge"] == "tail" and s1.extra["hops"] == 2
    assert s1.aliases == ("C1",) and s1.image == world_row(1)["images"][0]["bytes"]
    assert s1.source == "mmsr_world"


# ---- benchmark formats (own small fixtures) --------------------------------------------------


def test_infoseek_jsonl_with_image_folder(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    (images / "oven_001.jpg").write_bytes(image_bytes(fmt="JPEG"))
    numeric = {"wikidata": 1.5, "range": [1.2, 1.8]}
    path = write_jsonl(
        tmp_path / "infoseek_val.jsonl",
        [
            {"data_id": "val_1", "image_id": "oven_001", "question": "What is the height?",
             "answer": ["1.5"], "answer_eval": [numeric], "data_split": "val_unseen_entity"},
            {"data_id": "val_2", "image_id": "oven_404", "question": "Who built this?",
             "answer": ["Gustave Eiffel"], "answer_eval": ["Gustave Eiffel", "Eiffel"]},
        ],
    )  # fmt: skip
    assert detect_format(path) == "infoseek"
    stats = LoadStats()
    s1, s2 = iter_samples(path, image_dir=images, stats=stats)
    assert s1.answer == "1.5" and s1.extra["answer_eval"] == [numeric]  # numeric range kept
    assert s1.image is not None and s1.image_path == str(images / "oven_001.jpg")
    assert s1.extra["data_split"] == "val_unseen_entity"
    assert s2.aliases == ("Eiffel",) and s2.image is None and stats.missing_images == 1


def test_mmsearch_parquet(tmp_path: Path) -> None:
    img = image_bytes()
    rows = [
        {"sample_id": "news_1", "query": "Who won this race?", "gt_answer": "Ana",
         "alternative_gt_answers": ["Ana B."], "query_image": {"bytes": img, "path": None},
         "area": "news", "subfield": "sports", "timestamp": "2024-08"},
        {"sample_id": "news_2", "query": "When is the launch?", "gt_answer": "May 2",
         "alternative_gt_answers": [], "query_image": None, "area": "news",
         "subfield": "tech", "timestamp": "2024-05"},
    ]  # fmt: skip
    path = write_parquet(tmp_path / "end2end.parquet", rows)
    assert detect_format(path) == "mmsearch"
    a, b = load_samples(path)
    assert (a.id, a.answer, a.aliases, a.image) == ("news_1", "Ana", ("Ana B.",), img)
    assert b.image is None and b.extra["subfield"] == "tech"  # image-free queries exist


def test_simplevqa_parquet(tmp_path: Path) -> None:
    rows = [
        {"data_id": 7, "image": {"bytes": image_bytes(), "path": "7.png"}, "question": "What?",
         "answer": "A cat", "language": "EN", "vqa_category": "animal",
         "original_category": "nature", "atomic_question": "q", "atomic_fact": "f"},
    ]  # fmt: skip
    path = write_parquet(tmp_path / "simplevqa.parquet", rows)
    assert detect_format(path) == "simplevqa"
    (s,) = load_samples(path)
    assert s.id == "7" and s.answer == "A cat" and s.extra["vqa_category"] == "animal"


# ---- detection, explicit format, limits, streaming -------------------------------------------


@pytest.mark.parametrize(
    ("name", "record", "expected"),
    [
        ("a.jsonl", {"level1_qa": {}, "id": "x"}, "livevqa"),  # LiveVQA item
        ("b.jsonl", {"data_id": "v", "image_id": "o", "answer_eval": []}, "infoseek"),  # InfoSeek
        ("c.jsonl", {"query": "q", "gt_answer": "a"}, "mmsearch"),  # MMSearch
        ("d.jsonl", {"question": "q", "answer": "a", "vqa_category": "c"}, "simplevqa"),
        ("e.jsonl", {"question": "q", "ground_truth": "a"}, "fvqa"),  # flat FVQA export
    ],
)
def test_detect_format_from_keys(tmp_path: Path, name: str, record: dict, expected: str) -> None:
    assert detect_format(write_jsonl(tmp_path / name, [record])) == expected


def test_undetectable_file_names_known_formats(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "x.jsonl", [{"foo": 1}])
    with pytest.raises(ValueError, match="cannot tell the format") as info:
        load_samples(path)
    assert all(name in str(info.value) for name in FORMATS)


def test_explicit_format_overrides_detection(tmp_path: Path) -> None:
    path = write_world(tmp_path / "w.parquet", [world_row(0)])
    (s,) = load_samples(path, format="fvqa")  # plain FVQA: labels kept, but not validated
    assert s.extra["search_need"] == "none"
    with pytest.raises(ValueError, match="unknown data format"):
        load_samples(path, format="nope")


def test_limit_and_streaming_stop_early(tmp_path: Path) -> None:
    good = {"question": "q?", "ground_truth": "a"}
    path = write_jsonl(tmp_path / "f.jsonl", [good, good, good, "{broken"])
    assert len(load_samples(path, limit=2)) == 2
    stream = iter_samples(path)
    assert next(stream).answer == "a"  # rows are produced before the bad last line is read
    with pytest.raises(ValueError, match="row 3"):
        list(stream)


def test_summary_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_jsonl(tmp_path / "f.jsonl", [{"question": "q", "ground_truth": "a"}, "[]"])
    with caplog.at_level(logging.INFO, logger="mmsr.data"):
        load_samples(path, skip_bad=True)
    assert "1 samples from 2 rows, 1 rows skipped" in caplog.text


def test_json_object_of_records(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"k1": {"question": "q", "ground_truth": "a", "data_id": "k1"}}))
    (s,) = load_samples(path, format="fvqa")
    assert s.id == "k1" and s.extra["_key"] == "k1"


def test_parquet_is_streamed_in_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pyarrow.parquet as pq

    import mmsr.data.readers as readers

    batches: list[int] = []
    original = pq.ParquetFile.iter_batches

    def spy(self: pq.ParquetFile, *args: object, **kwargs: object) -> object:
        for batch in original(self, *args, **kwargs):
            batches.append(batch.num_rows)
            yield batch

    monkeypatch.setattr(readers, "PARQUET_BATCH_ROWS", 2)
    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    rows = [world_row(i) for i in range(5)] + [world_row(5, hops=7)]
    stream = iter_samples(write_world(tmp_path / "w.parquet", rows))
    assert [next(stream).id for _ in range(3)] == ["world-0", "world-1", "world-2"]
    assert batches == [2, 2]  # only the batches needed so far were read
    assert [s.id for s in islice(stream, 2)] == ["world-3", "world-4"]
    with pytest.raises(ValueError, match="row 5: field 'hops'"):
        next(stream)
    assert batches == [2, 2, 2]


def test_data_layer_never_imports_torch() -> None:
    code = (
        "import sys, mmsr.data, mmsr.data.qagen, mmsr.data.cli; "
        "from mmsr.data import load_samples; "
        "sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


def test_open_image_gives_rgb_pil_images(shared_samples: Path) -> None:
    (first,) = load_samples(shared_samples / "mmsearch_r1_mini_data" / "mini_data.pq", limit=1)
    assert first.image is not None
    img = open_image(first.image)
    assert img.mode == "RGB" and min(img.size) > 16
    assert hash(first) == hash(first)  # samples stay hashable despite the ``extra`` mapping
    with pytest.raises(ValueError, match="not a readable image"):
        open_image(b"nope")
