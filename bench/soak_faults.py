"""Faults ``bench/soak.py`` injects beyond SIGKILL, the checks after them, and phase 4 (inspect).

Into a stopped GRPO run (phase 3, ``soak_grpo.py``), before a resume:
- ``cut_metrics_line``: the last whole line of ``metrics.jsonl`` cut mid-line;
- ``damage_checkpoint``: the newest checkpoint's ``model/model.safetensors`` or ``trainer.pt``
  cut to half its size (the resume must skip it for the one before, with a warning).
Into a running run (phases 2 and 3): ``second_writer`` starts the same command on the folder
the run holds (paused meanwhile, so that it cannot end first); it must be refused (exit 1, one
line naming the folder).
After phase 3: ``dump_ledger`` checks that each ``samples/step_N/`` holds exactly the step's
rollouts, line for line those of the uninterrupted run.
Phase 4 (``inspect_phase``): a real ``mmsr inspect`` process on 127.0.0.1 serves an eval run, a
training folder and a run with a damaged ``metrics.json``, all with bad lines appended (nested
100,000 deep, wrong-typed fields, 160 KB of repeated tags, a cut last line); a few threads ask
every route a bounded number of times. Every answer must be below 500 and come within a bound.

Not a library module: a bench helper, imported by ``soak.py``, ``soak_grpo.py`` and the tests.
"""

from __future__ import annotations

import json
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# --- faults into a stopped GRPO run ---

DAMAGED_FILES = ("model/model.safetensors", "trainer.pt")


def _step_of(checkpoint: Path) -> int:
    return int(checkpoint.name.split("_")[1])


def cut_metrics_line(out: Path) -> dict[str, int] | None:
    """Cut the last whole line of ``out/metrics.jsonl`` to half its length (a torn tail the kill
    left goes with it); None when there is no whole line. Step k's line is written before step
    k's checkpoint, so a kill can cut it only while that checkpoint does not exist: checkpoints
    of step k and later are removed with the cut (``checkpoints_removed``). Without that the
    state is one no kill leaves, and step k's line could never come back (metrics are not in
    checkpoints)."""
    from mmsr.train.checkpoint import list_checkpoints

    path = out / "metrics.jsonl"
    data = path.read_bytes() if path.is_file() else b""
    end = data.rfind(b"\n") + 1  # whole lines end here
    if end == 0:
        return None
    start = data.rfind(b"\n", 0, end - 1) + 1  # the last whole line starts here
    try:
        step = int(json.loads(data[start:end])["step"])
    except (ValueError, KeyError, TypeError):  # a damaged line a resume kept: no step to cut
        return None
    removed = [c for c in list_checkpoints(out / "checkpoints") if _step_of(c) >= step]
    for checkpoint in removed:
        shutil.rmtree(checkpoint)
    path.write_bytes(data[: start + (end - start) // 2])
    return {"step": step, "checkpoints_removed": len(removed)}


def damage_checkpoint(root: Path, which: str) -> dict[str, Any] | None:
    """Cut ``which`` of the newest checkpoint under ``root`` to half its size, as a kill or a
    full disk mid-write would; None while fewer than two checkpoints exist (the resume needs an
    intact one to fall back on). Returns its step, the names of the damaged and the previous
    checkpoint."""
    from mmsr.train.checkpoint import list_checkpoints

    found = list_checkpoints(root)
    if len(found) < 2:
        return None
    path = found[-1] / which
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size // 2)
    return {"step": _step_of(found[-1]), "damaged": found[-1].name, "previous": found[-2].name,
            "file": which}  # fmt: skip


# --- a second writer on a held folder ---


def _holds(lock: Path, pid: int) -> bool:
    try:
        return lock.read_text(encoding="utf-8").strip() == str(pid)
    except (OSError, ValueError):
        return False


def second_writer(
    cmd: Sequence[str],
    out: str,
    holder: subprocess.Popen[bytes],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    hold_s: float = 30.0,
    wait_s: float = 90.0,
) -> dict[str, Any]:
    """Run ``cmd`` (whose ``--out`` is ``out``) while ``holder`` runs on that folder; what came
    of it.

    Waits until the folder's lock names the holder's pid (it has taken the folder), or for
    ``hold_s`` (a run that takes no lock: ``held`` 0, tried all the same). The holder is then
    paused (SIGSTOP; a stopped process keeps its lock) so that it cannot end before ``cmd``
    tries the folder, ``cmd`` runs once, killed after ``wait_s`` (a run that was not refused
    goes on writing), and the holder goes on (SIGCONT). ``refused``: exit 1 with one line on
    stderr naming the folder.
    """
    lock = (cwd or Path.cwd()) / out / ".lock"
    deadline = time.monotonic() + hold_s
    while not (held := _holds(lock, holder.pid)) and time.monotonic() < deadline:
        if holder.poll() is not None:
            return {"tried": 0, "refused": 0, "line": "the first run ended before it was met"}
        time.sleep(0.05)
    started = time.monotonic()
    holder.send_signal(signal.SIGSTOP)
    try:
        done = subprocess.run(
            list(cmd), cwd=cwd, env=env, capture_output=True, text=True, timeout=wait_s
        )
        rc, err = done.returncode, done.stderr
    except subprocess.TimeoutExpired as stopped:  # it ran on: not refused
        rc, err = None, str(stopped.stderr or "")
    finally:
        holder.send_signal(signal.SIGCONT)
    lines = [line for line in err.splitlines() if line.strip()]
    named = len(lines) == 1 and lines[0].startswith(f"mmsr: error: {out} is in use")
    return {
        "tried": 1,
        "held": int(held),
        "refused": int(rc == 1 and named),
        "exit": rc,
        "stderr_lines": len(lines),
        "line": (lines[-1] if lines else "")[-300:],
        "seconds": round(time.monotonic() - started, 1),
    }


# --- sample dumps after kill / resume cycles ---


def _dump_lines(run: Path, step: int) -> list[Any]:
    """The lines of ``run``'s dump of ``step``, parsed, without timings (a line that is not
    JSON stays a string, so it differs from any good line)."""
    path = run / "samples" / f"step_{step:06d}" / "trajectories.jsonl"
    out: list[Any] = []
    for text in path.read_text(encoding="utf-8").splitlines() if path.is_file() else []:
        try:
            record = json.loads(text)
        except ValueError:
            record = text
        calls = record.get("tool_calls") if isinstance(record, dict) else None
        for call in calls if isinstance(calls, list) else []:
            if isinstance(call, dict):
                call.pop("latency_s", None)  # a timing: differs between any two runs
        out.append(record)
    return out


DUMP_CHECKS = ("lost", "duplicated", "wrong", "stale_tmp", "unplanned", "reference_short")
"""What ``dump_ledger`` counts that must be 0."""


def dump_ledger(reference: Path, run: Path, steps: int, rollouts: int) -> dict[str, int]:
    """Dump lines of ``run`` lost, duplicated and wrong (another step, or not the line of the
    uninterrupted ``reference`` at that place), step by step; dumps of unplanned steps and
    temporary dumps left behind.

    Each ``samples/step_N/trajectories.jsonl`` must hold exactly ``rollouts`` lines."""
    counts: Counter[str] = Counter()
    for step in range(1, steps + 1):
        want, got = _dump_lines(reference, step), _dump_lines(run, step)
        counts["lines"] += len(got)
        counts["reference_short"] += len(want) != rollouts  # the comparison would say nothing
        counts["lost"] += max(rollouts - len(got), 0)
        counts["duplicated"] += max(len(got) - rollouts, 0)
        counts["wrong"] += sum(
            not isinstance(g, dict) or g.get("step") != step or g != w
            for g, w in zip(got, want, strict=False)
        )
    folder = run / "samples"
    names = [p.name for p in folder.iterdir()] if folder.is_dir() else []
    planned = {f"step_{s:06d}" for s in range(1, steps + 1)}
    counts["stale_tmp"] = sum(n.startswith(".tmp-") for n in names)
    counts["unplanned"] = sum(not n.startswith(".tmp-") and n not in planned for n in names)
    return {k: counts[k] for k in ("lines", *DUMP_CHECKS)}


# --- phase 4: the inspector under bad lines ---

DEEP = 100_000
WRONG: list[Any] = [["image"], {"k": "v"}, 7, -1, 1.5, "text", None, True, 10**400]
"""Lists and objects where strings are, numbers (one beyond float), a string, null, a bool."""
WRONG_FIELDS: list[tuple[str | int, ...]] = [
    ("id",), ("question",), ("answer",), ("golds",), ("golds", 0), ("category",), ("need",),
    ("end_reason",), ("error",), ("method",), ("step",), ("group",), ("advantage",),
    ("images",), ("images", 0), ("turns",), ("turns", 0), ("turns", 0, "text"),
    ("turns", 0, "n_images"), ("turns", 1, "text"), ("reward",), ("reward", "score"),
    ("tool_calls",), ("tool_calls", 0), ("tool_calls", 0, "hits"),
    ("tool_calls", 0, "hits", 0, "title"), ("tool_calls", 1, "query"),
]  # fmt: skip
TAG_UNITS = ("<reason>", "<answer>", "<text_search>", "<reason></answer>")
TAG_BYTES = 160_000
NESTED_LINES = 3
"""Of ``bad_lines``, those the inspector must show as bad rows (the others fall back)."""


def _with_field(record: dict[str, Any], where: tuple[str | int, ...], value: Any) -> Any:
    out = json.loads(json.dumps(record))
    parent = out
    for key in where[:-1]:
        parent = parent[key]
    parent[where[-1]] = value
    return out


def searching_line(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` (a line of ``mmsr eval --method direct``) as a training sample that searched
    an image and then the text, so that tool-call fields exist to be given a wrong type."""
    calls = [
        {"turn": 0, "tool": "image", "query": None, "n_hits": 1, "error": None, "latency_s": 0.1,
         "hits": [{"title": "Entity0", "url": "https://example.org/0", "thumbnail": True}]},
        {"turn": 1, "tool": "text", "query": "entity", "n_hits": 1, "error": None,
         "latency_s": 0.1, "hits": [{"title": "Entity0", "url": "https://example.org/0",
                                     "summary": "A page."}]},
    ]  # fmt: skip
    return {**record, "id": "searching", "tool_calls": calls, "step": 1, "group": 0,
            "advantage": 0.5}  # fmt: skip


def bad_lines(record: dict[str, Any]) -> list[str]:
    """Whole lines the inspector must take one at a time: nested too deep to parse (lists,
    objects) or to send (a field), each field of ``record`` with each wrong type, assistant
    text of ``TAG_BYTES`` of one repeated tag."""
    nested = json.loads("[" * 70 + "]" * 70)
    lines = ["[" * DEEP + "]" * DEEP, '{"a":' * DEEP + "1" + "}" * DEEP,
             json.dumps({**record, "id": "deep-field", "reward": {"a": nested}})]  # fmt: skip
    assert len(lines) == NESTED_LINES
    lines += [json.dumps(_with_field(record, w, v)) for w in WRONG_FIELDS for v in WRONG]
    for unit in TAG_UNITS:
        tags = _with_field(record, ("turns", 1, "text"), unit * (TAG_BYTES // len(unit)))
        lines.append(json.dumps({**tags, "id": f"tags-{unit}"}))
    return lines


def _append(path: Path, lines: Sequence[str], cut: str) -> None:
    """Append whole ``lines`` and then ``cut`` cut mid-line (no newline: a write cut short)."""
    with path.open("a", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines) + cut[: len(cut) // 2])


def write_served(runs: Path, eval_run: Path) -> tuple[dict[str, tuple[int, int]], int]:
    """Under ``runs``: the finished ``eval_run`` and a training folder made of its lines, both
    with bad lines appended, and a run whose ``metrics.json`` nests too deep. Returns each
    run's name with the rows and bad rows the inspector must list (a cut last line is a bad
    row, "unfinished"), and how many bad lines were written in all."""
    text = (eval_run / "trajectories.jsonl").read_text(encoding="utf-8")
    good = [json.loads(line) for line in text.splitlines()]
    searching = searching_line(good[0])
    bad = bad_lines(searching)
    step = runs / "grpo" / "samples" / "step_000001"
    step.mkdir(parents=True)
    shutil.copytree(eval_run / "images", step / "images")
    samples = [{**r, "step": 1, "group": i // 2, "advantage": 0.0} for i, r in enumerate(good)]
    (step / "trajectories.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in samples), encoding="utf-8"
    )
    for folder in (eval_run, step):
        _append(folder / "trajectories.jsonl", [json.dumps(searching), *bad], json.dumps(good[1]))
    metrics = [json.dumps({"step": 1, "reward/mean": 0.5}), '{"step": "two", "reward/mean": []}']
    _append(runs / "grpo" / "metrics.jsonl", [*metrics, "[" * DEEP + "]" * DEEP], metrics[0])
    deep = runs / "deep"
    deep.mkdir()
    (deep / "trajectories.jsonl").write_text(text, encoding="utf-8")
    (deep / "metrics.json").write_text("[" * DEEP + "]" * DEEP, encoding="utf-8")
    served = (len(good) + 1 + len(bad) + 1, NESTED_LINES + 1)  # the cut line: one bad row
    names = [f"{runs.name}/eval", f"{runs.name}/grpo/samples/step_000001"]
    # per trajectory file its bad and cut lines; in metrics.jsonl two and a cut; metrics.json
    appended = 2 * (len(bad) + 1) + 3 + 1
    return {**dict.fromkeys(names, served), f"{runs.name}/deep": (len(good), 0)}, appended


LIST_PARAMS: list[dict[str, Any]] = [
    {},
    {"bad": "true"},
    {"text": "reason", "limit": 500},
    {"offset": 100, "limit": 50, "tools": "both"},
    {"correct": "false", "reward_min": 0.05, "reward_max": 1},
    {"category": "search_required", "need": "image", "end_reason": "answered", "searched": "true"},
]
SIDE_IDS = ("soak-0", "searching", "deep-field", *(f"tags-{u}" for u in TAG_UNITS), "absent")
Route = tuple[str, dict[str, Any]]
PAGES = ("/", "/favicon.ico", "/static/app.js", "/static/app.css", "/static/nope.js", "/api/runs")


def routes(root: str, image: str) -> tuple[list[Route], dict[str, tuple[int, int]]]:
    """Every route of the inspector at ``root`` over what it serves: each run's list (filtered
    several ways), groups, every line and one past the end, an image, names that are not its
    images; the page and its files; the same questions side by side, compared, the training.
    With each run's name, rows and bad rows as listed."""
    import httpx

    def get(path: str, **params: Any) -> Any:
        reply = httpx.get(root + path, params=params, timeout=60)
        if reply.status_code != 200:
            raise RuntimeError(f"GET {path} {params}: {reply.status_code} {reply.text[:200]}")
        return reply.json()

    listing = get("/api/runs")
    keys = [r["key"] for r in listing["runs"]]
    listed = {}
    out: list[Route] = [(p, {}) for p in PAGES]
    for key, run in zip(keys, listing["runs"], strict=True):
        counts = get("/api/list", run=key, limit=1)["counts"]
        lines = counts["n"]
        listed[run["name"]] = (lines, counts["bad"])
        out += [("/api/list", {"run": key, **p}) for p in LIST_PARAMS]
        out += [("/api/groups", {"run": key}), ("/api/groups", {"run": key, "offset": 1})]
        out += [("/api/trajectory", {"run": key, "line": i}) for i in range(1, lines + 2)]
        out += [("/api/image", {"run": key, "name": n}) for n in (image, "../x.png", "no.png")]
    out += [("/api/side", {"run": keys, "id": i}) for i in SIDE_IDS]
    out += [("/api/compare", {"run": keys, "disagree": d})
            for d in ("correct", "searched", "answer", "all")]  # fmt: skip
    out += [("/api/training", {"key": t["key"]}) for t in listing["trainings"]]
    out += [("/api/training", {"key": "absent"}), ("/api/list", {"run": "absent"})]
    return out, listed


def hammer(
    root: str, jobs: Sequence[Route], threads: int, slow_s: float, until: float
) -> tuple[Counter[str], list[str]]:
    """GET each of ``jobs`` once from ``threads`` threads until done or ``until``: counts of
    answers by status, 5xx, answers slower than ``slow_s``, transport errors, requests left
    unsent; and up to 5 of the 5xx, slow or failed requests."""
    import httpx

    todo: queue.SimpleQueue[Route] = queue.SimpleQueue()
    for job in jobs:
        todo.put(job)
    counts: Counter[str] = Counter()
    failures: list[str] = []
    lock = threading.Lock()

    def work() -> None:
        with httpx.Client(base_url=root, timeout=max(3 * slow_s, 10.0)) as client:
            while time.monotonic() < until:
                try:
                    path, params = todo.get_nowait()
                except queue.Empty:
                    return
                started = time.monotonic()
                try:
                    status: int | None = client.get(path, params=params).status_code
                except httpx.HTTPError:
                    status = None
                took = time.monotonic() - started
                with lock:
                    counts["requests"] += 1
                    counts[f"status_{status or 'none'}"] += 1
                    counts["5xx"] += status is not None and status >= 500
                    counts["transport_errors"] += status is None
                    counts["slow"] += took > slow_s
                    counts["max_ms"] = max(counts["max_ms"], round(1000 * took))
                    if (status or 500) >= 500 or took > slow_s:
                        failures.append(f"GET {path} {params}: {status} in {took:.1f} s"[:300])

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    counts["unsent"] = todo.qsize()
    return counts, failures[:5]


def _wait_up(proc: subprocess.Popen[bytes], root: str, until: float) -> None:
    import httpx

    while time.monotonic() < until:
        if proc.poll() is not None:
            raise RuntimeError(f"mmsr inspect exited with {proc.returncode}")
        try:
            if httpx.get(root + "/", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError("mmsr inspect did not answer in time")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "mmsr.cli", *args]


def _serve(
    runs: Path, port: int, image: str, log: Path, *, threads: int, rounds: int, slow_s: float,
    until: float,
) -> dict[str, Any]:  # fmt: skip
    """Serve ``runs`` by ``mmsr inspect`` on ``port`` and hammer it; stopped at the end."""
    root = f"http://127.0.0.1:{port}"
    with log.open("wb") as sink:
        cmd = _cli("inspect", str(runs), "--host", "127.0.0.1", "--port", str(port))
        server = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT)
        try:
            _wait_up(server, root, until)
            jobs, listed = routes(root, image)
            counts, failures = hammer(root, jobs * rounds, threads, slow_s, until)
            alive = server.poll() is None
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    return {"routes": len(jobs), "listed": listed, "counts": counts, "failures": failures,
            "alive": alive}  # fmt: skip


def inspect_phase(
    work: Path, data: Path, port: int, *, threads: int, rounds: int, slow_s: float, seconds: float
) -> dict[str, Any]:
    """Phase 4 in ``work`` (questions ``data``, the inspector on ``port``), bounded by
    ``seconds``; the ``inspect_*`` figures of the report."""
    started = time.monotonic()
    runs = work / "runs"
    cmd = _cli("eval", "--policy", "scripted:top-title", "--method", "direct", "--data", str(data),
               "--search", "none", "--out", str(runs / "eval"), "--no-progress")  # fmt: skip
    made = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds)
    if made.returncode:
        return {"inspect_ok": False, "inspect_error": f"mmsr eval: {made.stderr[-300:]}"}
    served, appended = write_served(runs, runs / "eval")
    image = sorted((runs / "eval" / "images").iterdir())[0].name
    try:
        got = _serve(runs, port, image, work / "inspect.log", threads=threads, rounds=rounds,
                     slow_s=slow_s, until=started + seconds)  # fmt: skip
    except RuntimeError as err:
        return {"inspect_ok": False, "inspect_error": str(err)[-300:]}
    counts = got["counts"]
    listed = [(got["listed"].get(name, (0, 0)), want) for name, want in served.items()]
    result = {
        "inspect_bad_lines": appended,
        "inspect_rows_missing": sum(max(w - n, 0) for (n, _), (w, _) in listed),
        "inspect_rows_extra": sum(max(n - w, 0) for (n, _), (w, _) in listed),
        "inspect_bad_rows_wrong": sum(abs(b - wb) for (_, b), (_, wb) in listed),
        "inspect_routes": got["routes"],
        "inspect_requests": counts["requests"],
        "inspect_unsent": counts["unsent"],
        "inspect_5xx": counts["5xx"],
        "inspect_slow": counts["slow"],
        "inspect_transport_errors": counts["transport_errors"],
        "inspect_max_ms": counts["max_ms"],
        "inspect_statuses": {
            k[7:]: v for k, v in sorted(counts.items()) if k.startswith("status_")
        },
        "inspect_alive": got["alive"],
        "inspect_failures": got["failures"],
    }
    result["inspect_ok"] = inspect_ok(result)
    return {**result, "inspect_seconds": round(time.monotonic() - started, 1)}


def inspect_ok(result: Mapping[str, Any]) -> bool:
    """Phase 4 held: every request answered, none with a 5xx, none slow, the inspector still
    up at the end, and each served file listed whole (every bad line one bad row)."""
    return (
        result.get("inspect_requests", 0) > 0
        and not result["inspect_unsent"]
        and not (result["inspect_5xx"] or result["inspect_slow"])
        and not result["inspect_transport_errors"]
        and bool(result["inspect_alive"])
        and not (result["inspect_rows_missing"] or result["inspect_rows_extra"])
        and not result["inspect_bad_rows_wrong"]
    )
