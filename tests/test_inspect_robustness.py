"""The inspector against hostile or damaged run folders: lines and metrics files nested too
deep to parse, fields of the wrong type, assistant text of repeated tags (rendered in
linear time), a trajectory file rewritten in place, and an ``images/`` folder that is a link
out of the run. Each one must cost at most its own line (or file), never a page."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from inspect_runs import picture, write_eval_run, write_training_run
from test_inspect_app import client_for, get

from mmsr.inspect.rows import summarize
from mmsr.inspect.views import assistant_pieces, trajectory_view

DEEP = 100_000


def insert_line(run: Path, text: str, at: int = 2) -> None:
    """Put ``text`` in as line ``at + 1`` of the run's trajectories."""
    path = run / "trajectories.jsonl"
    lines = path.read_text().splitlines()
    lines.insert(at, text)
    path.write_text("\n".join(lines) + "\n")


# --- nested too deep to parse ---


@pytest.mark.parametrize(
    "text",
    [
        "[" * DEEP + "]" * DEEP,  # a list in lists, beyond the parser's recursion
        '{"a":' * DEEP + "1" + "}" * DEEP,  # the same of objects
        '{"id": "x", "reward": {"a": ' + "[" * 70 + "]" * 70 + "}}",  # parses, too deep to send
    ],
    ids=["lists", "objects", "a-field"],
)
def test_a_line_nested_too_deep_is_one_bad_line(tmp_path: Path, text: str) -> None:
    run = write_eval_run(tmp_path / "run", "rag", searches=True)
    insert_line(run, text)
    with client_for(run) as c:
        data = get(c, "/api/list", run="0")
        assert data["counts"]["n"] == 7 and data["counts"]["bad"] == 1
        bad = [r for r in data["items"] if r["bad"]]
        assert [r["line"] for r in bad] == [3] and "nested more than" in bad[0]["bad"]
        assert get(c, "/api/trajectory", run="0", line=3)["trajectory"]["bad"] is True
        assert get(c, "/api/trajectory", run="0", line=4)["trajectory"]["row"]["id"] == "q-fox"
        side = get(c, "/api/side", run=["0"], id="q-owl")["runs"][0]["trajectory"]
        assert side["row"]["id"] == "q-owl"


def test_a_metrics_file_nested_too_deep_is_a_note_and_every_run_is_listed(
    tmp_path: Path,
) -> None:
    write_eval_run(tmp_path / "runs" / "deep", "rag", searches=True)
    write_eval_run(tmp_path / "runs" / "fine", "rag", searches=False)
    write_training_run(tmp_path / "runs" / "grpo")
    (tmp_path / "runs" / "deep" / "metrics.json").write_text("[" * DEEP + "]" * DEEP)
    with (tmp_path / "runs" / "grpo" / "metrics.jsonl").open("a") as f:
        f.write('{"step": 4, "x": ' + "[" * DEEP + "]" * DEEP + "}\n")
    with client_for(tmp_path / "runs") as c:
        runs = {r["name"]: r["metrics"] for r in get(c, "/api/runs")["runs"]}
        assert len(runs) == 4 and runs["runs/fine"]["overall"]["n"] == 6
        assert list(runs["runs/deep"]) == ["note"] and "nested" in runs["runs/deep"]["note"]
        listed = get(c, "/api/list", run="0/deep")
        assert "note" in listed["metrics"] and listed["counts"]["n"] == 6
        steps = get(c, "/api/training", key="0/grpo")["metrics"]
        assert [m["step"] for m in steps] == [2, 4]  # the deep line is skipped


# --- fields of the wrong type ---

WRONG = [["image"], {"k": "v"}, 7, -1, 1.5, "text", None, True, 10**400]
"""Lists and objects where strings are, numbers (one beyond float), a string, null, a bool."""
FIELDS = [
    ("id",),
    ("question",),
    ("answer",),
    ("golds",),
    ("golds", 0),
    ("judge",),
    ("category",),
    ("need",),
    ("end_reason",),
    ("error",),
    ("method",),
    ("group",),
    ("advantage",),
    ("step",),
    ("images",),
    ("images", 0),
    ("turns",),
    ("turns", 0),
    ("turns", 0, "role"),
    ("turns", 0, "text"),
    ("turns", 0, "n_images"),
    ("turns", 1, "text"),
    ("reward",),
    ("reward", "score"),
    ("reward", "accuracy"),
    ("reward", "answer"),
    ("tool_calls",),
    ("tool_calls", 0),
    ("tool_calls", 0, "tool"),
    ("tool_calls", 0, "turn"),
    ("tool_calls", 0, "query"),
    ("tool_calls", 0, "error"),
    ("tool_calls", 0, "latency_s"),
    ("tool_calls", 0, "n_hits"),
    ("tool_calls", 0, "hits"),
    ("tool_calls", 0, "hits", 0),
    ("tool_calls", 0, "hits", 0, "title"),
    ("tool_calls", 0, "hits", 0, "url"),
    ("tool_calls", 0, "hits", 0, "thumbnail"),
    ("tool_calls", 1, "hits", 0, "summary"),
]


def searching_line(tmp_path: Path) -> dict[str, Any]:
    """A whole line of an eval run that searched images and text."""
    run = write_eval_run(tmp_path / "good", "rag", searches=True)
    record: dict[str, Any] = json.loads((run / "trajectories.jsonl").read_text().splitlines()[1])
    assert record["tool_calls"][0]["tool"] == "image" and record["tool_calls"][1]["hits"]
    return record


def with_field(record: dict[str, Any], where: tuple[str | int, ...], value: Any) -> Any:
    """A copy of ``record`` with the field at ``where`` set to ``value``."""
    out = json.loads(json.dumps(record))
    parent = out
    for key in where[:-1]:
        parent = parent[key]
    parent[where[-1]] = value
    return out


@pytest.mark.parametrize("where", FIELDS, ids=lambda w: ".".join(map(str, w)))
def test_a_field_of_the_wrong_type_falls_back(tmp_path: Path, where: tuple[str | int, ...]) -> None:
    record = searching_line(tmp_path)
    for value in WRONG:
        odd = with_field(record, where, value)
        row = summarize(odd, 2)
        assert row["tools"] in ("none", "image", "text", "both") and row["bad"] is None
        assert isinstance(row["id"], str) and isinstance(row["question"], str)
        assert row["reward"] is None or isinstance(row["reward"], float)
        view = trajectory_view(odd, 2)
        assert view["row"] == row and all(isinstance(g, str) for g in view["golds"])


def test_lines_with_wrong_typed_fields_are_served(tmp_path: Path) -> None:
    record = searching_line(tmp_path)
    odd = [with_field(record, where, value) for where in FIELDS for value in WRONG]
    run = tmp_path / "odd"
    run.mkdir()
    (run / "trajectories.jsonl").write_text("".join(json.dumps(r) + "\n" for r in odd))
    with client_for(run) as c:
        data = get(c, "/api/list", run="0", limit=500)
        assert data["counts"]["n"] == len(odd) and data["counts"]["bad"] == 0
        for line in range(1, len(odd) + 1):
            get(c, "/api/trajectory", run="0", line=line)
        assert get(c, "/api/groups", run="0")["total"] >= 1
        assert get(c, "/api/compare", run=["0", "0"])["n_common"] >= 1


# --- rendering time ---


@pytest.mark.parametrize(
    "unit",
    ["<reason>", "<answer>", "<text_search>", "<reason></answer>", "<answer></answer>"],
)
def test_repeated_tags_render_in_linear_time(unit: str) -> None:
    text = unit * (200_000 // len(unit))
    start = time.perf_counter()
    pieces = assistant_pieces(text)
    took = time.perf_counter() - start
    assert "".join(p["text"] for p in pieces) == text
    assert took < 2, f"{took:.1f} s for 200 KB"  # quadratic: ~45 s


# --- a trajectory file rewritten in place ---


@pytest.mark.parametrize(
    "rewrite",
    [
        lambda lines: lines[::-1],  # the same bytes in another order: same size
        lambda lines: [lines[0]] + [lines[3]] * 8,  # the same first line, then others, longer
    ],
    ids=["reversed", "same-start-longer"],
)
def test_a_file_rewritten_in_place_is_read_afresh(tmp_path: Path, rewrite: Any) -> None:
    run = write_eval_run(tmp_path / "run", "direct", searches=False)
    path = run / "trajectories.jsonl"
    lines = path.read_text().splitlines()
    new = rewrite(lines)
    before = path.stat()
    with client_for(run) as c:
        assert len(get(c, "/api/list", run="0")["items"]) == 6
        with path.open("w") as f:  # truncated and written again, as ``mmsr rollout`` does
            f.write("\n".join(new) + "\n")
        after = path.stat()
        assert after.st_ino == before.st_ino and after.st_size >= before.st_size
        rows = get(c, "/api/list", run="0")["items"]
        assert [r["id"] for r in rows] == [json.loads(x)["id"] for x in new]
        assert not any(r["bad"] for r in rows)
        last = get(c, "/api/trajectory", run="0", line=len(new))["trajectory"]
        assert last["row"]["id"] == json.loads(new[-1])["id"]


# --- an images folder that links out of the run ---


def test_an_images_folder_linked_out_of_the_run_is_refused(tmp_path: Path) -> None:
    run = write_eval_run(tmp_path / "runs" / "run", "direct", searches=False)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    picture("owl").save(elsewhere / "secret.png")
    os.rename(run / "images", run / "pictures")
    os.symlink(run / "pictures", run / "images")  # a link inside the run folder: served
    shown = next(p.name for p in (run / "pictures").iterdir())
    with client_for(tmp_path / "runs") as c:
        assert c.get("/api/image", params={"run": "0/run", "name": shown}).status_code == 200
        (run / "images").unlink()
        os.symlink(elsewhere, run / "images")
        response = c.get("/api/image", params={"run": "0/run", "name": "secret.png"})
        assert response.status_code == 404 and not response.content.startswith(b"\x89PNG")
