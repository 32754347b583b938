"""``mmsr eval --search <fvqa config>`` end to end: a two-row FVQA file in the veRL parquet
layout and a results pickle, both built here, the pickle converted by ``mmsr search
convert-fvqa-cache``, then an evaluation whose image searches are served the released hits of
each question's own ``data_id``."""

from __future__ import annotations

import io
import json
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

from PIL import Image

from mmsr.cli import main
from mmsr.data import load_samples, sample_image
from mmsr.data.export import fvqa_column_types
from mmsr.search.registry import build_search

# data_id -> (question, gold, released hit titles); the scripted policy answers the top title
ROWS = {
    "fvqa_test_101": ("Which bridge is this?", "Tower Bridge", ["Tower Bridge", "London"]),
    "fvqa_test_202": ("What river is shown?", "Tagus River", ["Tagus River", "Lisbon", "Tejo"]),
}


def _jpeg(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), color).save(buffer, format="JPEG")
    return buffer.getvalue()


def _write_fvqa_parquet(path: Path) -> None:
    """The columns of the released FVQA files (``candidate_answers`` a JSON string)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = fvqa_column_types()
    schema = pa.schema(
        [
            ("data_source", pa.string()),
            ("prompt", types["prompt"]),
            ("images", types["images"]),
            ("reward_model", types["reward_model"]),
            ("data_id", pa.string()),
            ("category", pa.string()),
        ]
    )
    rows = [
        {
            "data_source": "mmsearch_r1/fvqa_test",
            "prompt": [{"role": "user", "content": question}],
            # the same pixels for both: only the data_id can tell the questions apart
            "images": [{"bytes": _jpeg((90, 120, 200)), "path": None}],
            "reward_model": {
                "candidate_answers": json.dumps([gold]),
                "ground_truth": gold,
                "style": "rule",
            },
            "data_id": data_id,
            "category": "search_required",
        }
        for data_id, (question, gold, _) in ROWS.items()
    ]
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def _results_folder(tmp_path: Path) -> Path:
    release = {
        data_id: {
            "tool_returned_web_title_list": titles,
            "tool_returned_images_urls": [
                Image.new("RGB", (8, 6), (i * 40, 0, 0)) for i in range(len(titles))
            ],
        }
        for data_id, (_, _, titles) in ROWS.items()
    }
    pickle_path = tmp_path / "fvqa_results.pkl"
    pickle_path.write_bytes(pickle.dumps(release, protocol=4))
    out = tmp_path / "fvqa-results"
    argv = ["search", "convert-fvqa-cache", str(pickle_path), str(out)]
    done = subprocess.run(
        [sys.executable, "-m", "mmsr.cli", *argv],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return out


def test_samples_open_with_their_data_id_and_find_their_hits(tmp_path: Path) -> None:
    data = tmp_path / "fvqa_test.parquet"
    _write_fvqa_parquet(data)
    tools = build_search({"backend": "fvqa", "path": str(_results_folder(tmp_path))})
    assert tools.image is not None
    for sample in load_samples(data):
        hits = tools.image.search(sample_image(sample), 5)
        assert [h.title for h in hits] == ROWS[sample.id][2]


def test_eval_with_the_fvqa_backend_serves_each_question_its_hits(tmp_path: Path) -> None:
    data, out = tmp_path / "fvqa_test.parquet", tmp_path / "run"
    _write_fvqa_parquet(data)
    config = tmp_path / "fvqa.json"
    config.write_text(json.dumps({"backend": "fvqa", "path": str(_results_folder(tmp_path))}))
    args = ["eval", "--policy", "scripted:top-title", "--method", "on-demand"]
    args += ["--data", str(data), "--search", str(config), "--out", str(out), "--no-progress"]
    assert main(args) == 0
    lines = [json.loads(x) for x in (out / "trajectories.jsonl").read_text().splitlines()]
    assert sorted(line["id"] for line in lines) == sorted(ROWS)
    for line in lines:
        (call,) = line["tool_calls"]
        titles: list[Any] = [hit["title"] for hit in call["hits"]]
        assert call["tool"] == "image" and call["error"] is None
        assert titles == ROWS[line["id"]][2]
        assert line["answer"] == ROWS[line["id"]][1]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["overall"]["accuracy_em"] == 1.0
    assert metrics["overall"]["failed_image_calls"] == 0
