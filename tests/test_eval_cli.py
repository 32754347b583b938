"""``mmsr eval`` and ``mmsr report`` end to end on the session's small world: every method,
resumption after a crash (in a subprocess, as a user runs it), a recorded then replayed
search cache, the report's numbers, and an OpenAI-compatible policy and judge served by a
loopback chat server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from loopback import json_reply, loopback_server

from mmsr.cli import main
from mmsr.eval.loop import TRAJECTORIES, read_finished

MMSR = [sys.executable, "-m", "mmsr.cli"]


def _mmsr(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [*MMSR, *map(str, args)], capture_output=True, text=True, check=False, timeout=120
    )
    if check and done.returncode != 0:
        raise AssertionError(f"mmsr {args} failed:\n{done.stderr[-3000:]}")
    return done


@pytest.fixture(scope="module")
def world(small_world: tuple[Path, Path]) -> tuple[Path, Path]:
    """(test.parquet, index folder) of the session's small world."""
    root, index = small_world
    return root / "test.parquet", index


def _eval(
    world: tuple[Path, Path], out: Path, method: str, *extra: str | Path, fresh: bool = False
) -> int:
    """``mmsr eval`` with the top-title baseline; ``fresh``: in a subprocess (as a user runs
    it), else in this process (faster: torch and the index load once)."""
    args: list[str | Path] = ["eval", "--policy", "scripted:top-title", "--method", method]
    args += ["--data", world[0], "--search", f"local:{world[1]}"]
    args += ["--out", out, "--no-progress", "--batch-size", "4", *extra]
    if fresh:
        return _mmsr(*args, check=False).returncode
    return main([str(a) for a in args])


def _lines(run: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (run / TRAJECTORIES).read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def runs(world: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for method in ("direct", "rag", "on-demand", "oracle"):
        out[method] = root / method
        assert _eval(world, out[method], method) == 0
    return out


def test_runs_keep_their_images_and_hits_for_the_inspector(runs: dict[str, Path]) -> None:
    line = _lines(runs["rag"])[0]
    question_image, *thumbnails = line["images"][: line["turns"][0]["n_images"]]
    assert (runs["rag"] / "images" / question_image).is_file()
    image_call = line["tool_calls"][0]
    assert image_call["tool"] == "image" and image_call["turn"] == -1
    assert len(image_call["hits"]) == image_call["n_hits"] > 0
    assert all(hit["title"] and "url" in hit for hit in image_call["hits"])
    # every hit with a thumbnail is shown with it in the first turn (up to the render limit)
    flagged = sum(hit["thumbnail"] for hit in image_call["hits"])
    assert len(thumbnails) == min(flagged, 5)
    assert all((runs["rag"] / "images" / name).is_file() for name in thumbnails)
    # text hits carry their summaries
    text_calls = [c for c in line["tool_calls"] if c["tool"] == "text" and not c["error"]]
    assert all("summary" in hit for call in text_calls for hit in call["hits"])


def test_every_method_runs_and_writes_its_files(runs: dict[str, Path]) -> None:
    ratios = {}
    for method, run in runs.items():
        metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
        config = json.loads((run / "config.json").read_text(encoding="utf-8"))
        lines = _lines(run)
        assert metrics["run"]["method"] == config["method"] == method
        assert metrics["overall"]["n"] == metrics["run"]["n_done"] == len(lines) > 0
        assert len({line["id"] for line in lines}) == len(lines)
        assert all(line["method"] == method and "reward" in line for line in lines)
        ratios[method] = metrics["overall"]["search_ratio"]
    # no search without tools; rag always searches; the oracle only where the labels say so
    assert ratios["direct"] == 0.0 and ratios["rag"] == 1.0
    oracle = json.loads((runs["oracle"] / "metrics.json").read_text(encoding="utf-8"))
    assert oracle["by_need"]["none"]["search_ratio"] == 0.0
    assert oracle["by_need"]["both"]["both_ratio"] == 1.0
    assert oracle["search_decision"]["precision"] == oracle["search_decision"]["recall"] == 1.0


def test_resume_after_a_crash_skips_finished_questions(
    world: tuple[Path, Path], tmp_path: Path
) -> None:
    run = tmp_path / "run"
    assert _eval(world, run, "on-demand", "--limit", "6", fresh=True) == 0
    before = (run / TRAJECTORIES).read_bytes()
    with (run / TRAJECTORIES).open("a", encoding="utf-8") as f:
        f.write('{"id": "cut off by a cra')  # a crash in the middle of writing a line
    assert _eval(world, run, "on-demand", fresh=True) == 0
    after = (run / TRAJECTORIES).read_bytes()
    assert after.startswith(before)  # finished lines are kept byte for byte
    ids = [line["id"] for line in _lines(run)]
    assert (
        len(ids)
        == len(set(ids))
        == json.loads((run / "metrics.json").read_text())["run"]["n_samples"]
    )
    assert len(ids) > 6


def test_resume_with_other_settings_is_refused(
    world: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _eval(world, tmp_path / "run", "direct", "--limit", "2") == 0
    assert _eval(world, tmp_path / "run", "rag", "--limit", "2") == 1
    assert "other settings (method)" in capsys.readouterr().err


def test_report_holds_the_numbers_of_metrics_json(runs: dict[str, Path], tmp_path: Path) -> None:
    _mmsr("report", *runs.values(), "--out", tmp_path)
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    for method, run in runs.items():
        overall = json.loads((run / "metrics.json").read_text(encoding="utf-8"))["overall"]
        acc, sr = f"{100 * overall['accuracy_em']:.1f}", f"{100 * overall['search_ratio']:.1f}"
        row = f"| scripted:top-title | {method} | {acc} | {sr} | {acc} | {sr} |"
        assert row in md
        assert f"<td>{method}</td><td>{acc}</td><td>{sr}</td>" in page
    assert "mmsr_world Acc" in md
    assert page.count("data:image/png;base64,") == 3  # scatter, per category, per need
    assert (tmp_path / "accuracy_vs_search_ratio.png").read_bytes()[:4] == b"\x89PNG"


def test_read_finished_refuses_a_damaged_middle_line(tmp_path: Path) -> None:
    path = tmp_path / TRAJECTORIES
    path.write_text('{"id": "a"}\nnot json\n{"id": "b"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="line 2 is not JSON"):
        read_finished(path)


# --- an OpenAI-compatible policy and judge on a loopback server ---


def _chat_handler(seen: list[dict[str, Any]]) -> Any:
    def handler(method: str, path: str, headers: dict[str, str], body: bytes) -> Any:
        request = json.loads(body)
        seen.append(request)
        messages = request["messages"]
        if messages[0]["role"] == "system":  # the judge: correct when the prediction says Paris
            correct = "Prediction: Paris" in messages[-1]["content"]
            text = "Fine.\nVERDICT: " + ("CORRECT" if correct else "INCORRECT")
        elif len(messages) == 1:
            text = "<reason>I need to look.</reason><search><img></search>"
        else:
            text = "<reason>Found it.</reason><answer>Paris</answer>"
        reply = {"choices": [{"message": {"content": text}, "finish_reason": "stop"}]}
        return json_reply(200, reply)

    return handler


def test_openai_policy_eval_with_judge(world: tuple[Path, Path], tmp_path: Path) -> None:
    seen: list[dict[str, Any]] = []
    out = tmp_path / "run"
    with loopback_server(_chat_handler(seen)) as url:
        code = main(
            [
                "eval",
                "--policy",
                f"openai:{url}#served-model",
                "--method",
                "on-demand",
                "--data",
                str(world[0]),
                "--out",
                str(out),
                "--limit",
                "3",
                "--judge",
                f"{url}#judge-model",
                "--no-progress",
            ]
        )
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    policy_calls = [r for r in seen if r["model"] == "served-model"]
    judge_calls = [r for r in seen if r["model"] == "judge-model"]
    assert len(policy_calls) == 6 and len(judge_calls) == 3  # 2 turns per question; 1 verdict
    assert all(r["temperature"] == 0.0 for r in seen)  # greedy
    first = policy_calls[0]["messages"][0]["content"]
    assert any(p.get("image_url", {}).get("url", "").startswith("data:image/png") for p in first)
    # no search tool configured: the image search failed as an observation, then it answered
    assert metrics["overall"]["accuracy_judge"] == 1.0 and metrics["overall"]["accuracy_em"] == 0
    assert metrics["run"]["judge"] == "judge-model" and metrics["run"]["judge_unusable"] == 0
    assert (out / "judge_cache.sqlite").is_file()
    config = (out / "config.json").read_text(encoding="utf-8")
    assert "served-model" in config and "OPENAI_API_KEY" not in config


def test_search_cache_record_then_replay_is_a_frozen_web(
    world: tuple[Path, Path], tmp_path: Path
) -> None:
    cache = tmp_path / "cache.sqlite"
    index = world[1]
    record = tmp_path / "record.toml"
    record.write_text(
        f'backend = "local"\nindex = "{index}"\n[cache]\nmode = "record"\npath = "{cache}"\n',
        encoding="utf-8",
    )
    replay = tmp_path / "replay.json"
    config = {
        "backend": "local",
        "index": str(index),
        "cache": {"mode": "replay", "path": str(cache)},
    }
    replay.write_text(json.dumps(config), encoding="utf-8")
    assert _eval(world, tmp_path / "a", "on-demand", "--limit", "4") == 0
    # a later --search replaces the helper's local index
    assert _eval(world, tmp_path / "rec", "on-demand", "--limit", "4", "--search", record) == 0
    assert _eval(world, tmp_path / "rep", "on-demand", "--limit", "6", "--search", replay) == 0
    live, recorded, replayed = (_lines(tmp_path / n) for n in ("a", "rec", "rep"))
    # the recording answers as the live index did, and the replay as the recording
    assert [x["answer"] for x in live] == [x["answer"] for x in recorded]
    assert [x["answer"] for x in replayed[:4]] == [x["answer"] for x in recorded]
    assert all(c["error"] is None for x in replayed[:4] for c in x["tool_calls"])
    # questions never recorded: a replay miss is a failed search the model sees, not a crash
    assert all(c["error"] for x in replayed[4:] for c in x["tool_calls"])
    assert [x["answer"] for x in replayed[4:]] == ["unknown", "unknown"]


def test_official_data_and_prompts_through_an_openai_server(
    shared_samples: Path, tmp_path: Path
) -> None:
    """The released veRL parquet and the original release's prompt set: the server sees those
    prompts with the images, and its answers are scored against the file's golds."""
    from mmsr.data import load_samples

    data = shared_samples / "mmsearch_r1_mini_data" / "mini_data.pq"
    golds = {s.question: s.answer for s in load_samples(data)}
    seen: list[str] = []

    def handler(method: str, path: str, headers: dict[str, str], body: bytes) -> Any:
        parts = json.loads(body)["messages"][0]["content"]
        text = "".join(p.get("text", "") for p in parts)
        seen.append(text)
        answer = next((a for q, a in golds.items() if text.endswith(q)), "?")
        reply = f"The image shows it. <answer>{answer}</answer>"  # official style: no <reason>
        return json_reply(200, {"choices": [{"message": {"content": reply}}]})

    with loopback_server(handler) as url:
        args = ["eval", "--policy", f"openai:{url}#m", "--method", "on-demand", "--data", str(data)]
        args += ["--prompts", str(shared_samples / "mmsearch_r1_prompts"), "--out", str(tmp_path)]
        assert main([*args, "--no-progress"]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["overall"]["n"] == 5 and metrics["overall"]["accuracy_em"] == 1.0
    assert metrics["run"]["benchmark"] == "mmsearch_r1/infoseek_train_split"
    assert len(seen) == 5 and all(t.startswith("Answer the user's question based on") for t in seen)
