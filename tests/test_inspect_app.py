"""The inspector's store and HTTP app against real run folders: what the API answers, bad
and unfinished lines, files growing and being replaced while served, paging 10,000 lines,
path traversal, host names, read-only serving and the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from inspect_runs import HOSTILE, write_eval_run, write_served_runs, write_training_run

from mmsr.cli import main
from mmsr.inspect.app import create_app
from mmsr.inspect.store import Store


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``runs/warm``, ``runs/rl`` (eval runs) and ``runs/grpo`` (a training folder)."""
    return write_served_runs(tmp_path_factory.mktemp("served") / "runs")


def client_for(*folders: Path) -> TestClient:
    return TestClient(create_app(Store(folders)), base_url="http://127.0.0.1:8765")


@pytest.fixture(scope="module")
def client(served: Path) -> Iterator[TestClient]:
    with client_for(served) as c:
        yield c


def get(client: TestClient, path: str, **params: Any) -> Any:
    response = client.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_folder_of_runs_is_found_with_its_training_steps(client: TestClient) -> None:
    data = get(client, "/api/runs")
    names = {r["name"]: r for r in data["runs"]}
    assert set(names) == {
        "runs/warm",
        "runs/rl",
        "runs/grpo/samples/step_000002",
        "runs/grpo/samples/step_000004",
    }
    assert (
        names["runs/warm"]["kind"] == "eval" and names["runs/warm"]["metrics"]["overall"]["n"] == 6
    )
    step = names["runs/grpo/samples/step_000004"]
    assert step["training"] == "0/grpo" and step["step"] == 4
    assert step["metrics"]["overall"]["reward/mean"] == 0.55  # its line of metrics.jsonl
    assert data["trainings"] == [
        {
            "key": "0/grpo",
            "path": str(served_path(data, "grpo")),
            "steps": ["0/grpo/samples/step_000002", "0/grpo/samples/step_000004"],
        }
    ]


def served_path(data: dict[str, Any], name: str) -> Path:
    return Path(data["roots"][0]) / name


def test_list_counts_filters_and_shows_a_bad_line(client: TestClient) -> None:
    data = get(client, "/api/list", run="0/warm")
    assert data["counts"]["n"] == 7 and data["counts"]["bad"] == 1
    assert data["counts"]["correct"] == 3 and data["counts"]["wrong"] == 3
    bad = [r for r in data["items"] if r["bad"]]
    assert [r["line"] for r in bad] == [3] and "not JSON" in bad[0]["bad"]
    assert data["facets"]["category"] == {"": 1, "search_free": 3, "search_required": 3}
    assert data["metrics"]["overall"]["accuracy_em"] == 0.5
    wrong = get(client, "/api/list", run="0/warm", correct="false", category="search_required")
    assert wrong["total"] == 3 and wrong["matched"]["n"] == 3 and wrong["counts"]["n"] == 7
    found = get(client, "/api/list", run="0/rl", text="Owl")
    assert [r["id"] for r in found["items"]] == ["q-owl"]
    both = get(client, "/api/list", run="0/rl", tools="both", reward_min=0.5)
    assert [r["id"] for r in both["items"]] == ["q-lion", "q-cat", "q-bee"]
    assert client.get("/api/list", params={"run": "0/rl", "tools": "neither"}).status_code == 422


def test_trajectory_view(client: TestClient) -> None:
    t = get(client, "/api/trajectory", run="0/rl", line=2)["trajectory"]
    assert t["row"]["id"] == "q-lion" and t["row"]["correct"] is True and t["golds"] == ["Lion"]
    image_call, text_call = t["tool_calls"]
    assert [h["thumbnail"] is not None for h in image_call["hits"]] == [True, True, False]
    assert (
        text_call["query"] == "lion animal"
        and text_call["hits"][0]["summary"] == "A lion is an animal."
    )
    assert t["reward"]["penalty"] == pytest.approx(0.9) and t["reward"]["accuracy"] == 1.0
    assert [turn["role"] for turn in t["turns"]] == ["user", "assistant"] * 3
    assert [p["kind"] for p in t["turns"][1]["pieces"]] == ["reason", "action"]
    for name in [t["question_image"], *(h["thumbnail"] for h in image_call["hits"][:2])]:
        image = client.get("/api/image", params={"run": "0/rl", "name": name})
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"
        assert image.content.startswith(b"\x89PNG")
    bad = get(client, "/api/trajectory", run="0/warm", line=3)["trajectory"]
    assert bad["bad"] is True and bad["row"]["question"].startswith('{"id": "broken"')
    assert client.get("/api/trajectory", params={"run": "0/warm", "line": 99}).status_code == 404


def test_side_by_side_and_disagreements(client: TestClient) -> None:
    data = get(client, "/api/compare", run=["0/warm", "0/rl"])
    assert data["n_common"] == 6 and data["patterns"] == {"✓✓": 3, "✗✓": 3}
    assert [item["id"] for item in data["items"]] == ["q-lion", "q-cat", "q-bee"]
    side = get(client, "/api/side", run=["0/warm", "0/rl"], id="q-lion")
    warm, rl = (x["trajectory"] for x in side["runs"])
    assert warm["row"]["answer"] == "Rock" and rl["row"]["answer"] == "Lion"
    assert get(client, "/api/side", run=["0/warm"], id="nowhere")["runs"][0]["trajectory"] is None
    assert client.get("/api/compare", params={"run": "0/warm"}).status_code == 400


def test_training_steps_and_groups(client: TestClient) -> None:
    data = get(client, "/api/training", key="0/grpo")
    assert [s["step"] for s in data["steps"]] == [2, 4] and data["steps"][0]["counts"]["n"] == 4
    groups = get(client, "/api/groups", run="0/grpo/samples/step_000004")
    assert groups["total"] == 2
    first = groups["items"][0]
    assert (first["key"], first["n"], first["correct"]) == ("group 0", 2, 1)
    assert [s["advantage"] for s in first["samples"]] == [0.7, -0.7]


def test_html_static_files_and_their_headers(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "http" not in page.text.replace("http-equiv", "")  # nothing loaded from elsewhere
    for name in ("app.js", "app.css"):
        assert client.get(f"/static/{name}").status_code == 200
    js = client.get("/static/app.js").text
    assert "innerHTML" not in js and "https://" not in js


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/api/image", {"run": "0/rl", "name": "../trajectories.jsonl"}),
        ("/api/image", {"run": "0/rl", "name": "../metrics.json"}),
        ("/api/image", {"run": "0/rl", "name": "/etc/passwd"}),
        ("/api/image", {"run": "0/rl", "name": "..%2F..%2Fsecret.png"}),
        ("/api/image", {"run": "0/rl", "name": "link.png"}),  # a symlink out of images/
        ("/api/image", {"run": "0/rl/../..", "name": "secret.png"}),
        ("/api/list", {"run": "0/.."}),
        ("/api/list", {"run": "/etc"}),
        ("/api/training", {"key": "0/../.."}),
        ("/static/../store.py", {}),
        ("/static/%2e%2e%2fstore.py", {}),
        ("/static/index.html/../../store.py", {}),
    ],
)
def test_nothing_outside_the_served_runs_can_be_read(
    served: Path, client: TestClient, path: str, params: dict[str, str]
) -> None:
    secret = served.parent / "secret.png"
    secret.write_bytes(b"\x89PNG TOPSECRET")
    link = served / "rl" / "images" / "link.png"
    if not link.is_symlink():
        link.symlink_to(secret)
    response = client.get(path, params=params)
    assert response.status_code in (400, 404, 422)
    assert b"TOPSECRET" not in response.content and b"import" not in response.content


def test_only_loopback_host_names_are_answered(served: Path) -> None:
    with TestClient(create_app(Store([served])), base_url="http://evil.example") as c:
        assert c.get("/api/runs").status_code == 400  # DNS rebinding
    with TestClient(create_app(Store([served])), base_url="http://localhost:8765") as c:
        assert c.get("/api/runs").status_code == 200


def test_lines_appended_while_served_show_up(tmp_path: Path) -> None:
    run = write_eval_run(tmp_path / "run", "direct", searches=False)
    path = run / "trajectories.jsonl"
    lines = path.read_text().splitlines()
    with client_for(run) as c:
        assert get(c, "/api/list", run="0")["total"] == 6
        with path.open("a") as f:
            f.write(lines[0] + "\n" + lines[1][:40])  # a line being written
        rows = get(c, "/api/list", run="0")["items"]
        assert len(rows) == 8 and "unfinished" in rows[-1]["bad"]
        with path.open("a") as f:
            f.write(lines[1][40:] + "\n")
        rows = get(c, "/api/list", run="0")["items"]
        assert len(rows) == 8 and rows[-1]["bad"] is None and rows[-1]["id"] == "q-lion"
        assert get(c, "/api/trajectory", run="0", line=8)["trajectory"]["row"]["id"] == "q-lion"
        # replaced by a shorter file (e.g. ``mmsr eval --retry-failed`` drops lines): read afresh
        tmp = path.with_suffix(".tmp")
        tmp.write_text(lines[5] + "\n")
        os.replace(tmp, path)
        assert [r["id"] for r in get(c, "/api/list", run="0")["items"]] == ["q-bee"]
        assert get(c, "/api/trajectory", run="0", line=1)["trajectory"]["row"]["id"] == "q-bee"


def test_ten_thousand_lines_are_paged(tmp_path: Path) -> None:
    run = tmp_path / "big"
    run.mkdir()
    one = {
        "question": "q",
        "reward": {"score": 1.0, "accuracy": 1.0},
        "turns": [{"role": "user", "text": "x" * 500}],
    }
    with (run / "trajectories.jsonl").open("w") as f:
        for i in range(10_000):
            f.write(json.dumps(one | {"id": f"q{i}"}) + "\n")
    with client_for(run) as c:
        start = time.perf_counter()
        data = get(c, "/api/list", run="0", offset=9_950, limit=100)
        assert (
            data["total"] == 10_000
            and len(data["items"]) == 50
            and data["items"][0]["id"] == "q9950"
        )
        again = get(c, "/api/list", run="0", text="q99", limit=100)
        assert again["total"] == 111 and len(again["items"]) == 100
        assert time.perf_counter() - start < 20  # indexed once, then filtered in memory
        assert (
            len(c.get("/api/list", params={"run": "0"}).content) < 100_000
        )  # one page, not the file
        assert c.get("/api/list", params={"run": "0", "limit": 100_000}).status_code == 422


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def test_serving_never_writes_to_a_run_folder(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    write_eval_run(root / "a", "rag", searches=True, bad_line=True)
    write_training_run(root / "grpo")
    before = _snapshot(root)
    with client_for(root) as c:
        for key in ("0/a", "0/grpo/samples/step_000002"):
            rows = get(c, "/api/list", run=key)["items"]
            for row in rows:
                get(c, "/api/trajectory", run=key, line=row["line"])
        get(c, "/api/groups", run="0/grpo/samples/step_000002")
        get(c, "/api/training", key="0/grpo")
    assert _snapshot(root) == before


def test_hostile_text_is_data_in_the_api(client: TestClient) -> None:
    rows = get(client, "/api/list", run="0/rl", text="onerror")["items"]
    assert rows[0]["question"].startswith(HOSTILE)  # sent as it is; the page puts it in as text


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mmsr = [sys.executable, "-m", "mmsr.cli", "inspect", "--help"]
    done = subprocess.run(mmsr, capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "--port" in done.stdout and "127.0.0.1" in done.stdout
    assert main(["inspect", str(tmp_path)]) == 1
    assert "no trajectories.jsonl" in capsys.readouterr().err
    assert main(["inspect", str(tmp_path / "none")]) == 1
    assert "no such folder" in capsys.readouterr().err
