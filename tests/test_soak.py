"""``bench/soak.py``'s phase 3 (kill -9 / resume of ``mmsr train grpo``): its pure checks, and
the phase itself on two steps (slow, off by default); the faults beside the kills
(``soak_faults.py``: a cut metrics line, a damaged checkpoint, a second writer, the sample-dump
ledger) on hand-made folders and real refusals; phase 4 (the inspector under bad lines)."""

from __future__ import annotations

import doctest
import json
import math
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import torch

from mmsr.run_folder import read_finished
from mmsr.train.checkpoint import list_checkpoints

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))  # the soak's files import each other by name

import soak  # noqa: E402
import soak_faults  # noqa: E402
import soak_grpo  # noqa: E402


@pytest.mark.parametrize(
    ("steps", "planned", "expected"),
    [
        ([1, 2, 3], 3, (0, 0, 0, 0)),  # every step once, in order
        ([1, 3], 3, (1, 0, 0, 0)),  # a lost line
        ([1, 2, 2, 3], 3, (0, 1, 0, 0)),  # a redone step whose old line was kept
        ([1, 2, 3, 4], 3, (0, 0, 1, 0)),  # a step past the plan
        ([2, 1, 3], 3, (0, 0, 0, 1)),  # out of order
        ([], 2, (2, 0, 0, 0)),  # nothing written
    ],
)
def test_step_ledger(steps: list[int], planned: int, expected: tuple[int, ...]) -> None:
    got = soak_grpo.step_ledger(steps, planned)
    assert (got["lost"], got["duplicated"], got["unplanned"], got["out_of_order"]) == expected


def test_docstring_examples() -> None:
    result = doctest.testmod(soak_grpo)
    assert result.attempted > 0 and result.failed == 0


def test_differing_metrics_ignores_timings_only() -> None:
    a = [{"step": 1, "loss/total": 0.5, "perf/step_s": 3.0, "search/latency_s": 0.2}]
    same_but_slower = [{"step": 1, "loss/total": 0.5, "perf/step_s": 9.0, "search/latency_s": 1}]
    assert soak_grpo.differing_metrics(a, same_but_slower) == []
    other_loss = [{"step": 1, "loss/total": 0.50000001, "perf/step_s": 3.0}]
    assert soak_grpo.differing_metrics(a, other_loss) == ["1:loss/total"]
    extra_key = [{**a[0], "reward/mean": 0.1}]
    assert soak_grpo.differing_metrics(a, extra_key) == ["1:reward/mean"]
    assert soak_grpo.differing_metrics(a, []) == ["1:*"]


def test_differing_tensors_is_bit_exact() -> None:
    w = torch.linspace(-1, 1, 5)
    nudged = w.clone()
    nudged[2] = torch.nextafter(nudged[2], torch.tensor(1.0))  # one ulp away
    assert soak_grpo.differing_tensors({"w": w, "b": w}, {"w": w.clone(), "b": w.clone()}) == []
    assert soak_grpo.differing_tensors({"w": w, "b": w}, {"w": nudged, "b": w}) == ["w"]
    assert soak_grpo.differing_tensors({"w": w}, {"w": w, "extra": w}) == ["extra"]


def test_kill_delays_are_seeded_and_bounded() -> None:
    delays = soak_grpo.kill_delays(random.Random(0), 3, startup_s=10.0, train_s=40.0)
    assert delays == soak_grpo.kill_delays(random.Random(0), 3, startup_s=10.0, train_s=40.0)
    assert len(delays) == 3 and all(5.0 <= d <= 10.0 + 2 * 40.0 / 4 for d in delays)
    assert not math.isclose(delays[0], delays[1])


PASSING: dict[str, Any] = {
    "grpo_exit": 0,
    "grpo_steps": 4,
    "grpo_final_step": 4,
    "grpo_resumes": 2,
    "grpo_lost_steps": 0,
    "grpo_duplicated_steps": 0,
    "grpo_unplanned_steps": 0,
    "grpo_out_of_order_steps": 0,
    "grpo_bad_metrics_lines": 0,
    "grpo_checkpoints": 2,
    "grpo_unloadable": 0,
    "grpo_stale_tmp": 0,
    "grpo_tensors_trained": 80,
    "grpo_tensors_differing": 0,
    "grpo_metrics_differing": 0,
    **{f"grpo_dump_{k}": 0 for k in soak_faults.DUMP_CHECKS},
    "grpo_faults_not_injected": [],
    "grpo_metrics_cuts": 1,
    "grpo_metrics_cut_warned": 1,
    "grpo_damaged_checkpoints": ["step_000002/model/model.safetensors", "step_000003/trainer.pt"],
    "grpo_damage_skipped": 2,
    "grpo_second_writer_tried": 1,
    "grpo_second_writer_refused": 1,
}


@pytest.mark.parametrize(
    "broken",
    [
        {"grpo_exit": 1},  # the last resume crashed
        {"grpo_final_step": 3},  # stopped short of the plan
        {"grpo_resumes": 0},  # no kill landed: nothing was soaked
        {"grpo_lost_steps": 1},
        {"grpo_duplicated_steps": 1},
        {"grpo_unplanned_steps": 1},
        {"grpo_out_of_order_steps": 1},
        {"grpo_bad_metrics_lines": 1},  # a cut line the resume kept
        {"grpo_checkpoints": 0},
        {"grpo_unloadable": 1},
        {"grpo_stale_tmp": 1},  # a half checkpoint left behind
        {"grpo_tensors_trained": 0},  # weights never moved: the comparison says nothing
        {"grpo_tensors_differing": 1},
        {"grpo_metrics_differing": 1},
        {"grpo_dump_lost": 1},  # a step's dump short of its rollouts
        {"grpo_dump_duplicated": 8},  # a redone step appended to its old dump
        {"grpo_dump_wrong": 1},  # a line not the reference's at that place
        {"grpo_dump_stale_tmp": 1},  # a half-written dump left behind
        {"grpo_dump_unplanned": 1},
        {"grpo_dump_reference_short": 1},  # the comparison would say nothing
        {"grpo_faults_not_injected": ["damage:trainer.pt"]},
        {"grpo_metrics_cuts": 0, "grpo_metrics_cut_warned": 0},  # never injected
        {"grpo_metrics_cut_warned": 0},  # a cut line taken silently
        {"grpo_damaged_checkpoints": [], "grpo_damage_skipped": 0},
        {"grpo_damage_skipped": 1},  # one resume did not skip (or did not say so)
        {"grpo_second_writer_refused": 0},  # two runs on one folder
        {"grpo_second_writer_tried": 0, "grpo_second_writer_refused": 0},
    ],
)
def test_grpo_ok_fails_on_each_broken_check(broken: dict[str, int]) -> None:
    assert soak_grpo.grpo_ok(PASSING)
    assert not soak_grpo.grpo_ok({**PASSING, **broken})


def test_unknown_phase_is_refused() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / "soak.py"), "--phases", "grpo,nope"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "--phases" in done.stderr


@pytest.mark.slow
def test_grpo_phase_survives_a_kill() -> None:
    args = ["--phases", "grpo", "--grpo-steps", "2", "--grpo-kills", "1", "--grpo-seconds", "400"]
    done = subprocess.run(
        [sys.executable, str(BENCH / "soak.py"), *args], capture_output=True, text=True, timeout=450
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert done.returncode == 0 and report["grpo_ok"], report
    assert report["phases"] == ["grpo"] and report["grpo_final_step"] == 2
    assert report["grpo_dump_lines"] == 2 * soak_grpo.PROMPTS * soak_grpo.GROUP
    assert report["grpo_metrics_cuts"] == 1 and len(report["grpo_damaged_checkpoints"]) == 2


# --- the faults beside the kills (soak_faults.py) ---


def _checkpoints(root: Path, *steps: int) -> None:
    """Stand-in checkpoints: what ``list_checkpoints`` takes for complete ones."""
    for step in steps:
        folder = root / f"step_{step:06d}"
        (folder / "model").mkdir(parents=True)
        (folder / "model" / "model.safetensors").write_bytes(b"w" * 100)
        (folder / "trainer.pt").write_bytes(b"t" * 100)


LINE_2 = '{"step": 2, "reward/mean": 0.25}\n'


@pytest.mark.parametrize(
    ("tail", "checkpoints", "removed"),
    [
        ("", (1,), 0),  # line 2 past the newest checkpoint: a kill can cut it as it is
        ("", (1, 2), 1),  # step 2 checkpointed: its checkpoint goes, as before it was written
        ('{"step": 3, "rew', (1, 2), 1),  # a torn line the kill left goes with the cut
    ],
)
def test_cut_metrics_line_leaves_what_a_kill_mid_line_leaves(
    tmp_path: Path, tail: str, checkpoints: tuple[int, ...], removed: int
) -> None:
    _checkpoints(tmp_path / "checkpoints", *checkpoints)
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "reward/mean": 0.5}\n' + LINE_2 + tail, encoding="utf-8")
    assert soak_faults.cut_metrics_line(tmp_path) == {"step": 2, "checkpoints_removed": removed}
    text = path.read_text(encoding="utf-8")
    assert text.endswith(LINE_2[: len(LINE_2) // 2]) and not text.endswith("\n")
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step_000001"]
    assert [r["step"] for r in read_finished(path)] == [1]  # mmsr drops the cut line


def test_cut_metrics_line_needs_a_whole_line(tmp_path: Path) -> None:
    assert soak_faults.cut_metrics_line(tmp_path) is None  # no file
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "re', encoding="utf-8")
    assert soak_faults.cut_metrics_line(tmp_path) is None
    assert (tmp_path / "metrics.jsonl").read_text(encoding="utf-8") == '{"step": 1, "re'


@pytest.mark.parametrize("which", soak_faults.DAMAGED_FILES)
def test_damage_checkpoint_cuts_the_newest_only(tmp_path: Path, which: str) -> None:
    root = tmp_path / "checkpoints"
    _checkpoints(root, 1)
    assert soak_faults.damage_checkpoint(root, which) is None  # nothing to fall back on
    assert (root / "step_000001" / which).stat().st_size == 100
    _checkpoints(root, 2, 3)
    damaged = soak_faults.damage_checkpoint(root, which)
    assert damaged == {
        "step": 3,
        "damaged": "step_000003",
        "previous": "step_000002",
        "file": which,
    }
    assert (root / "step_000003" / which).stat().st_size == 50
    assert all((root / f"step_00000{s}" / which).stat().st_size == 100 for s in (1, 2))


def _dump(run: Path, step: int, lines: list[Any]) -> None:
    folder = run / "samples" / f"step_{step:06d}"
    folder.mkdir(parents=True, exist_ok=True)
    text = "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines)
    (folder / "trajectories.jsonl").write_text(text, encoding="utf-8")


def _rollout(step: int, i: int, latency: float = 0.1) -> dict[str, Any]:
    call = {"tool": "image", "latency_s": latency, "n_hits": 1}
    return {"id": f"q{i}", "step": step, "tool_calls": [call], "answer": f"a{step}{i}"}


def _spoil_nothing(run: Path) -> None:
    _dump(run, 2, [_rollout(2, 0, 9.0), _rollout(2, 1, 9.0)])  # other timings only


SPOILS: list[tuple[Callable[[Path], None], dict[str, int]]] = [
    (_spoil_nothing, {}),
    # a redone step appended to its old dump
    (lambda run: _dump(run, 2, [_rollout(2, 0), _rollout(2, 1)] * 2), {"duplicated": 2}),
    (lambda run: _dump(run, 2, [_rollout(2, 0)]), {"lost": 1}),
    (lambda run: _dump(run, 2, [_rollout(2, 0), _rollout(1, 1)]), {"wrong": 1}),  # step 1's line
    (lambda run: _dump(run, 2, [_rollout(2, 0), '{"id": "q1", "st']), {"wrong": 1}),  # cut line
    (lambda run: (run / "samples" / ".tmp-step_000002").mkdir(), {"stale_tmp": 1}),
    (lambda run: _dump(run, 3, [_rollout(3, 0), _rollout(3, 1)]), {"unplanned": 1}),
]


@pytest.mark.parametrize(("spoil", "expected"), SPOILS)
def test_dump_ledger_counts_lines_lost_duplicated_and_wrong(
    tmp_path: Path, spoil: Callable[[Path], None], expected: dict[str, int]
) -> None:
    reference, run = tmp_path / "reference", tmp_path / "run"
    for folder in (reference, run):
        for step in (1, 2):
            _dump(folder, step, [_rollout(step, 0), _rollout(step, 1)])
    spoil(run)
    got = soak_faults.dump_ledger(reference, run, steps=2, rollouts=2)
    assert {k: v for k, v in got.items() if k != "lines" and v} == expected


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Another process holding ``tmp_path / "run"`` (as a run does) until the test ends."""
    code = (
        "import sys, time; from pathlib import Path; from mmsr.run_folder import hold_run_folder\n"
        "with hold_run_folder(Path(sys.argv[1])):\n"
        "    time.sleep(120)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "run")])
    yield proc
    proc.kill()
    proc.wait()


def test_a_second_eval_on_a_held_folder_counts_as_refused(
    tmp_path: Path, holder: subprocess.Popen[bytes]
) -> None:
    soak.write_questions(tmp_path / "q.parquet", 2)
    cmd = [sys.executable, "-m", "mmsr.cli", "eval", "--policy", "scripted:top-title",
           "--method", "direct", "--data", str(tmp_path / "q.parquet"), "--search", "none",
           "--out", "run", "--no-progress"]  # fmt: skip
    got = soak_faults.second_writer(cmd, "run", holder, cwd=tmp_path, wait_s=60)
    assert got["tried"] == got["held"] == got["refused"] == 1 and got["exit"] == 1, got
    assert got["line"] == (
        f"mmsr: error: run is in use: another run holds it (process {holder.pid}); wait for "
        "it to end or use another --out"
    )
    assert not (tmp_path / "run" / "trajectories.jsonl").exists()


def test_a_second_writer_that_runs_is_not_refused(
    tmp_path: Path, holder: subprocess.Popen[bytes]
) -> None:
    ran = soak_faults.second_writer([sys.executable, "-c", "pass"], "run", holder, cwd=tmp_path)
    assert ran["tried"] == 1 and ran["refused"] == 0 and ran["exit"] == 0
    loud = [sys.executable, "-c", "import sys; sys.exit('mmsr: error: run is in use\\nmore')"]
    two_lines = soak_faults.second_writer(loud, "run", holder, cwd=tmp_path)
    assert two_lines["exit"] == 1 and two_lines["stderr_lines"] == 2
    assert two_lines["refused"] == 0
    holder.kill()
    holder.wait()
    ended = soak_faults.second_writer([sys.executable, "-c", "pass"], "elsewhere", holder)
    assert ended["tried"] == 0  # the first run ended before it was met: nothing was tried


def test_a_second_writer_meets_a_run_that_takes_no_lock(tmp_path: Path) -> None:
    lockless = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        got = soak_faults.second_writer(
            [sys.executable, "-c", "pass"], "run", lockless, cwd=tmp_path, hold_s=0.3
        )
    finally:
        lockless.kill()
        lockless.wait()
    assert (got["tried"], got["held"], got["refused"]) == (1, 0, 0)  # tried all the same


# --- phase 4: the inspector under bad lines ---


class _Answers(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.startswith("/slow"):
            time.sleep(0.6)
        status = 500 if self.path.startswith("/boom") else 200
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_hammer_counts_5xx_and_slow_answers() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    root = f"http://127.0.0.1:{server.server_address[1]}"
    jobs = [("/ok", {}), ("/boom", {"x": 1}), ("/slow", {})]
    try:
        counts, failures = soak_faults.hammer(root, jobs, 2, 0.3, time.monotonic() + 30)
        late, _ = soak_faults.hammer(root, jobs, 2, 0.3, time.monotonic() - 1)
    finally:
        server.shutdown()
    assert (counts["requests"], counts["5xx"], counts["slow"], counts["unsent"]) == (3, 1, 1, 0)
    assert counts["status_200"] == 2 and counts["max_ms"] >= 600
    assert sorted(f.split(":")[0] for f in failures) == ["GET /boom {'x'", "GET /slow {}"]
    assert late["requests"] == 0 and late["unsent"] == 3  # past the time bound: nothing sent


INSPECT_PASSING = {
    "inspect_requests": 100,
    "inspect_unsent": 0,
    "inspect_5xx": 0,
    "inspect_slow": 0,
    "inspect_transport_errors": 0,
    "inspect_alive": True,
    "inspect_rows_missing": 0,
    "inspect_rows_extra": 0,
    "inspect_bad_rows_wrong": 0,
}


@pytest.mark.parametrize(
    "broken",
    [
        {"inspect_requests": 0},
        {"inspect_unsent": 1},  # ran out of time: not every route was asked
        {"inspect_5xx": 1},
        {"inspect_slow": 1},
        {"inspect_transport_errors": 1},
        {"inspect_alive": False},  # the inspector died under the load
        {"inspect_rows_missing": 1},
        {"inspect_rows_extra": 1},
        {"inspect_bad_rows_wrong": 1},  # a bad line not shown as one bad row
    ],
)
def test_inspect_ok_fails_on_each_broken_check(broken: dict[str, Any]) -> None:
    assert soak_faults.inspect_ok(INSPECT_PASSING)
    assert not soak_faults.inspect_ok({**INSPECT_PASSING, **broken})


def test_inspect_phase_serves_bad_lines_without_a_5xx() -> None:
    args = ["--phases", "inspect", "--inspect-rounds", "1", "--inspect-seconds", "100"]
    done = subprocess.run(
        [sys.executable, str(BENCH / "soak.py"), *args], capture_output=True, text=True, timeout=150
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert done.returncode == 0 and report["inspect_ok"], report
    assert report["inspect_requests"] == report["inspect_routes"] > 500
    assert report["inspect_bad_lines"] > 500 and report["inspect_statuses"]["200"] > 500


def test_dumps_from_counts_the_dumps_a_resume_must_replace(tmp_path: Path) -> None:
    for name in ("step_000001", "step_000002", "step_000003", ".tmp-step_000004"):
        (tmp_path / "samples" / name).mkdir(parents=True)
    assert soak_grpo.dumps_from(tmp_path, 2) == 3  # steps 2 and 3, and the half-written one
    assert soak_grpo.dumps_from(tmp_path, 5) == 1
    assert soak_grpo.dumps_from(tmp_path / "absent", 1) == 0
