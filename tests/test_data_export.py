"""Export to veRL parquet: the layout, and round trips back through ``load_samples``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from _data_builders import world_row, write_world

from mmsr.data import load_samples, write_verl_parquet
from mmsr.types import Sample

BAD_JSONL = '{"question": "q", "ground_truth": "a"}\n{"question": "q"}\n'  # row 1: no answer
VERL_COLUMNS = {"data_source", "prompt", "images", "reward_model", "extra_info"}


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mmsr.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_world_round_trip_keeps_everything(tmp_path: Path) -> None:
    src = write_world(tmp_path / "w.parquet", [world_row(i) for i in range(5)])
    original = load_samples(src)
    out = tmp_path / "verl.parquet"
    assert write_verl_parquet(original, out, split="test") == 5
    back = load_samples(out)
    assert back == original  # ids, questions, golds, image bytes, category and labels
    assert [s.extra["search_need"] for s in back] == ["none", "text", "none", "image", "none"]


def test_mini_data_round_trip(shared_samples: Path, tmp_path: Path) -> None:
    original = load_samples(shared_samples / "mmsearch_r1_mini_data" / "mini_data.pq")
    out = tmp_path / "mini.parquet"
    write_verl_parquet(original, out)
    assert load_samples(out) == original


def test_livevqa_round_trip_without_images(shared_samples: Path, tmp_path: Path) -> None:
    original = load_samples(shared_samples / "livevqa" / "News_benchmark.json", limit=20)
    out = tmp_path / "live.parquet"
    write_verl_parquet(original, out)
    assert load_samples(out) == original  # options, levels and image paths survive


def test_layout_matches_official_files(tmp_path: Path) -> None:
    sample = Sample(id="s1", question="Who is this?", answer="Ada", aliases=("A. Lovelace",),
                    image=b"img", category="search_required", source="mine",
                    extra={"search_need": "image"})  # fmt: skip
    out = tmp_path / "v.parquet"
    write_verl_parquet([sample], out, image_token="<image>")
    table = pq.read_table(out)
    assert set(table.column_names) >= VERL_COLUMNS
    row = table.to_pylist()[0]
    assert row["prompt"] == [{"role": "user", "content": "<image>Who is this?"}]
    assert row["images"] == [{"bytes": b"img", "path": None}]
    rm = row["reward_model"]
    assert isinstance(rm["candidate_answers"], str)  # a JSON string, as in the official files
    assert json.loads(rm["candidate_answers"]) == ["Ada", "A. Lovelace"]
    assert (rm["ground_truth"], rm["style"]) == ("Ada", "rule")
    assert row["extra_info"]["data_id"] == "s1" and row["data_source"] == "mine"
    assert json.loads(row["extra_info"]["labels"]) == {"search_need": "image"}
    (back,) = load_samples(out, check_images=False)
    assert back.question == "Who is this?"  # the placeholder is stripped on the way back


def test_empty_export_is_a_valid_file(tmp_path: Path) -> None:
    out = tmp_path / "empty.parquet"
    assert write_verl_parquet([], out) == 0
    assert load_samples(out) == []


def test_cli_export_verl(shared_samples: Path, tmp_path: Path) -> None:
    src = shared_samples / "fvqa_train_samples" / "fvqa_train_50.jsonl"
    out = tmp_path / "fvqa.parquet"
    proc = _run_cli("data", "export-verl", str(src), str(out), "--limit", "10")
    assert proc.returncode == 0, proc.stderr
    assert "wrote 10 samples" in proc.stdout
    assert load_samples(out) == load_samples(src, limit=10)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["data", "export-verl", "missing.jsonl", "o.parquet"], "No such file"),  # no input
        (["data", "info", "x.txt"], "unknown file type"),  # unsupported suffix
        (["data", "export-verl", "bad.jsonl", "o.parquet"], "row 1: field 'ground_truth'"),
        (["data", "balance", "bad.jsonl", "o.jsonl", "o.parquet"], "row 1"),  # bad data first
    ],
)
def test_cli_errors_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "bad.jsonl").write_text(BAD_JSONL)
    proc = subprocess.run(
        [sys.executable, "-m", "mmsr.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 1 and message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_skip_bad_reports_the_count(tmp_path: Path) -> None:
    src = tmp_path / "bad.jsonl"
    src.write_text(BAD_JSONL)
    proc = _run_cli("data", "export-verl", str(src), str(tmp_path / "o.parquet"), "--skip-bad")
    assert proc.returncode == 0, proc.stderr
    assert "1 rows skipped" in proc.stdout and len(load_samples(tmp_path / "o.parquet")) == 1


def test_cli_info(shared_samples: Path) -> None:
    proc = _run_cli("data", "info", str(shared_samples / "livevqa" / "News_benchmark.json"))
    assert proc.returncode == 0, proc.stderr
    assert "format: livevqa" in proc.stdout and "700 samples from 350 rows" in proc.stdout
