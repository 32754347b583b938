"""``bench/search_path.py``: the search path's funnel over hand-written result lines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parents[1] / "bench" / "search_path.py"

ENTITIES = [
    {"id": "peru", "name": "Peru", "knowledge": "tail"},
    {"id": "chad", "name": "Chad", "knowledge": "tail"},
    {"id": "mali", "name": "Mali", "knowledge": "head"},
]


def _line(
    qid: str, need: str, calls: list[dict[str, Any]], answer: str, right: bool
) -> dict[str, Any]:
    said = f"<reason>The image shows {answer}.</reason><answer>{answer}</answer>"
    return {
        "id": qid,
        "need": need,
        "answer": answer,
        "golds": ["Lima"] if "capital" in qid else [answer if right else "?"],
        "reward": {"accuracy": 1.0 if right else 0.0},
        "tool_calls": calls,
        "turns": [{"role": "user", "text": "q"}, {"role": "assistant", "text": said}],
    }


def _image(*titles: str) -> dict[str, Any]:
    return {"tool": "image", "query": None, "hits": [{"title": t} for t in titles]}


def _text(query: str, *summaries: str) -> dict[str, Any]:
    hits = [{"title": "x", "summary": s} for s in summaries]
    return {"tool": "text", "query": query, "hits": hits}


def test_funnel_counts_each_stage(tmp_path: Path) -> None:
    world, run = tmp_path / "w", tmp_path / "run"
    world.mkdir()
    run.mkdir()
    (world / "entities.jsonl").write_text("".join(json.dumps(e) + "\n" for e in ENTITIES))
    lines = [
        # one hop, the entity first and copied: right
        _line("w-flag_name-peru", "image", [_image("Peru", "Chad")], "Peru", True),
        # one hop, the entity second, the first hit copied instead: wrong
        _line("w-flag_name-chad", "image", [_image("Peru", "Chad")], "Peru", False),
        # two hops, the entity missed by the image search; the value still in the text hits
        _line(
            "w-flag_capital-peru",
            "both",
            [_image("Chad", "Mali"), _text("Chad capital", "Lima is the capital of Peru")],
            "N'Djamena",
            False,
        ),
        # a head question answered directly: not in the funnel, counted as a direct answer
        _line("w-flag_name-mali", "none", [], "Mali", True),
        # a tail question answered directly with a head entity's name (closed-set recognition)
        _line("w-flag_demonym-chad", "both", [], "Mali", False),
    ]
    (run / "trajectories.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "f.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--world", str(world), "--run", str(run), "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(out.read_text())
    image, both, whole = (figures["funnel"][k] for k in ("image", "both", "all"))
    assert (image["n"], image["entity_rank1"], image["entity_lower"]) == (2, 0.5, 0.5)
    assert image["named_given_rank1"] == 1.0 and image["named_given_lower"] == 0.0
    assert image["named_first_hit"] == 1.0 and image["accuracy"] == 0.5
    assert (both["n"], both["entity_missed"], both["value_in_text_hits"]) == (1, 1.0, 1.0)
    assert both["correct_given_value"] == 0.0 and whole["n"] == 3
    assert figures["direct_names"] == {"head": {"own": 1}, "tail": {"head": 1}}


def test_a_missing_run_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "entities.jsonl").write_text(json.dumps(ENTITIES[0]) + "\n")
    done = subprocess.run(
        [sys.executable, str(BENCH), "--world", str(tmp_path), "--run", str(tmp_path / "no")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "trajectories.jsonl" in done.stderr
