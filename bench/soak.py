"""Soak test of mmsr's failure handling, on loopback only and bounded in time (issue 18).

    python bench/soak.py                      # 3 to 5 min: phases 1-2 (at most 90 s), 3, 4
    python bench/soak.py --seconds 40 --clients 4 --phases service,eval
    python bench/soak.py --phases grpo --grpo-steps 6 --grpo-kills 3
    python bench/soak.py --phases inspect --inspect-rounds 1

Four phases (``--phases``, all by default):
1. **service**: ``--clients`` threads call a real ``mmsr search serve`` process (uvicorn, small
   in-file backends) with a ``--bad-share`` of malformed requests (lone surrogates, 1e400,
   ``k: true``, octal IPv4 urls, deep nesting, bad base64, random bytes). A bad request must
   get a 4xx; every 5xx is counted.
2. **eval**: ``mmsr eval --method rag`` over ``--questions`` questions searches through a
   fault-injecting proxy in front of the service (500s, hangs past the client timeout,
   connection resets, malformed and deeply nested JSON); the eval process is killed with
   SIGKILL ``--kills`` times at random moments and resumed, then runs to the end. While the
   first launch holds its folder (paused meanwhile) a second ``mmsr eval`` on it must be
   refused (exit 1, one line naming the folder). Every question must be in
   ``trajectories.jsonl`` exactly once.
   Phases 1-2 share ``--seconds``.
3. **grpo** (``soak_grpo.py``): ``mmsr train grpo`` on a small world, the committed warm start,
   ``--grpo-steps`` steps with a checkpoint and a sample dump each step, killed with SIGKILL
   ``--grpo-kills`` times at seeded random moments and resumed, then run to the end; compared
   with an uninterrupted run of the same config and seed. Between stops the soak cuts the last
   metrics line mid-line and cuts the newest checkpoint's weights, then its trainer state
   (``soak_faults.py``; after the end if no stop allowed it); a first, extra launch meets a
   second ``mmsr train grpo`` on its folder before it is killed. Bounded by ``--grpo-seconds``.
4. **inspect** (``soak_faults.py``): a real ``mmsr inspect`` serves run folders with bad lines
   appended (nested 100,000 deep, wrong-typed fields, 160 KB of repeated tags, a cut line);
   ``--inspect-threads`` ask every route ``--inspect-rounds`` times. Every answer must be below
   500 and come within ``--inspect-slow-s``. Bounded by ``--inspect-seconds``.

The last line printed is JSON: requests, 5xx counts, lost and duplicated questions, resumes,
failed tool calls, the second eval's refusal (``eval_second_writer_*``); for phase 3
(``grpo_*``) resumes, the final step, lost or duplicated metrics lines, loadable checkpoints,
sample-dump lines lost, duplicated or wrong (``grpo_dump_*``), the faults injected and whether
the resumes reported them, the second writer's refusal, tensors differing from the
uninterrupted run; for phase 4 (``inspect_*``) requests, 5xx and slow answers, rows missing;
seconds. Exit status 1 when a bad request got a 5xx, a question was lost or duplicated, the
second eval was not refused, or a check of phase 3 or 4 failed (``grpo_ok``, ``inspect_ok``).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from soak_faults import inspect_phase, second_writer  # beside this file, on sys.path[0]

TOKEN = "soak-token"
# (endpoint, body): each a malformed request for that endpoint (None: for any endpoint)
BAD_REQUESTS: list[tuple[str | None, bytes]] = [
    ("/text_search", b'{"query": "\\ud800"}'),
    ("/text_search", b'{"query": "a", "k": 1e400}'),
    ("/text_search", b'{"query": "a", "k": NaN}'),
    ("/text_search", b'{"query": "a", "k": true}'),
    ("/text_search", b'{"query": "a", "k": "5"}'),
    ("/text_search", b'{"query": "a", "question": "\\udfff"}'),
    ("/retrieve", b'{"query": "a", "topk": true}'),
    ("/retrieve", b'{"queries": ["ok", "\\ud800"]}'),
    ("/retrieve", b'{"queries": []}'),
    ("/image_search", b'{"image_url": "http://0177.0.0.1/x.png"}'),
    ("/image_search", b'{"image_url": "http://[2002:a9fe:a9fe::1]/x.png"}'),
    ("/image_search", b'{"image_url": "file:///etc/passwd"}'),
    ("/image_search", b'{"image_base64": "%%%"}'),
    (None, b'{"query": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"),
    (None, b"[" * 20_000),
    (None, b"{not json"),
    (None, b""),
]


# --- the service's backends (deterministic, in this file so the service can import them) ---


class SoakText:
    def search(self, query: str, k: int, question: str | None = None) -> list[Any]:
        from mmsr.types import TextHit

        return [TextHit(f"{query} {i}", f"https://example.org/{i}", "A page.") for i in range(k)]


class SoakImage:
    def search(self, image: Any, k: int) -> list[Any]:
        from PIL import Image

        from mmsr.types import ImageHit

        thumb = Image.new("RGB", (8, 8), (30, 90, 200))
        return [ImageHit(f"Entity{i}", f"https://img.example/{i}", thumb) for i in range(k)]


def serve(port: int) -> None:
    from mmsr.search.base import SearchBackends
    from mmsr.search.service.server import ServiceConfig
    from mmsr.search.service.server import serve as run

    config = ServiceConfig(max_concurrency=4, max_queue=32, header_timeout_s=2, body_timeout_s=2)
    run(SearchBackends(image=SoakImage(), text=SoakText()), host="127.0.0.1", port=port,
        token=TOKEN, config=config)  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_service() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    root = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(root + "/health", timeout=1).status_code == 200:
                return proc, root
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the search service did not start")


# --- phase 1: clients with a share of bad requests ---


def _png_b64() -> str:
    import base64

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 10, 10)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def client_loop(root: str, until: float, bad_share: float, seed: int, out: Counter[str]) -> None:
    rng = random.Random(seed)
    good = [
        ("/text_search", json.dumps({"query": "eiffel", "k": 3}).encode()),
        ("/retrieve", json.dumps({"queries": ["a", "b"], "topk": 2}).encode()),
        ("/image_search", json.dumps({"image_base64": _png_b64(), "k": 2}).encode()),
    ]
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    with httpx.Client(base_url=root, headers=headers, timeout=10) as client:
        while time.monotonic() < until:
            bad = rng.random() < bad_share
            if bad:
                where, body = rng.choice([*BAD_REQUESTS, (None, rng.randbytes(40))])
                path = where or rng.choice(["/text_search", "/image_search", "/retrieve"])
            else:
                path, body = rng.choice(good)
            try:
                status = client.post(path, content=body).status_code
            except httpx.HTTPError:
                out["transport_errors"] += 1
                continue
            kind = "bad" if bad else "good"
            out[f"{kind}_requests"] += 1
            if status == 503:
                out["busy_503"] += 1
            elif status >= 500:
                out[f"{kind}_5xx"] += 1
            elif bad and status < 400:
                out["bad_accepted"] += 1


# --- phase 2: a fault-injecting proxy, and an eval killed with SIGKILL ---

FAULTS = ("pass", "pass", "pass", "500", "hang", "reset", "malformed", "nested")


def fault_proxy(upstream: str, seed: int, counts: Counter[str]) -> ThreadingHTTPServer:
    rng = random.Random(seed)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with lock:
                fault = rng.choice(FAULTS)
                counts[f"proxy_{fault}"] += 1
            if fault == "reset":
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.close_connection = True
                return
            if fault == "hang":
                time.sleep(2.5)  # past the client's 1-s timeout
                self.close_connection = True
                return
            status, payload = 200, b""
            if fault == "500":
                status, payload = 500, b'{"detail": "injected"}'
            elif fault == "malformed":
                payload = b'{"hits": [{"title": '
            elif fault == "nested":
                payload = b'{"hits": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
            else:
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                reply = httpx.post(upstream + self.path, content=body, headers=headers, timeout=10)
                status, payload = reply.status_code, reply.content
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def write_questions(path: Path, n: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    rows = []
    for i in range(n):
        buf = io.BytesIO()
        Image.new("RGB", (16, 16), (i * 37 % 255, 80, 160)).save(buf, format="PNG")
        rows.append(
            {
                "prompt": [{"role": "user", "content": f"<image>\nWhat is this? #{i}"}],
                "images": [{"bytes": buf.getvalue(), "path": f"q{i}.png"}],
                "reward_model": {
                    "ground_truth": f"Entity{i % 3}",
                    "candidate_answers": json.dumps([f"Entity{i % 3}"]),
                    "style": "rule",
                },
                "data_source": "soak",
                "data_id": f"soak-{i}",
                "category": "search_required",
            }
        )
    pq.write_table(pa.Table.from_pylist(rows), path)


def eval_with_kills(
    proxy: str, work: Path, questions: int, kills: int, until: float, seed: int
) -> dict[str, Any]:
    rng = random.Random(seed)
    data, out = work / "questions.parquet", work / "run"
    write_questions(data, questions)
    search = {"backend": "http", "url": proxy, "timeout_s": 1.0, "retry_attempts": 2,
              "retry_base_delay_s": 0.05}  # fmt: skip
    (work / "search.json").write_text(json.dumps(search), encoding="utf-8")
    cmd = [sys.executable, "-m", "mmsr.cli", "eval", "--policy", "scripted:top-title",
           "--method", "rag", "--data", str(data), "--search", str(work / "search.json"),
           "--out", str(out), "--batch-size", "4", "--concurrency", "4",
           "--no-progress"]  # fmt: skip
    env = {**os.environ, "MMSR_SEARCH_TOKEN": TOKEN}
    resumes, rc, writer = 0, None, {"tried": 0, "refused": 0}
    for i in range(kills):
        started, delay = time.monotonic(), rng.uniform(2.0, 6.0)
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if i == 0:  # the same command again, while this one holds the folder
            writer = second_writer(cmd, str(out), proc, env=env, hold_s=10)
        time.sleep(max(started + delay - time.monotonic(), 0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            resumes += 1
        proc.wait()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _, err = proc.communicate(timeout=max(30.0, until - time.monotonic()))
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    from mmsr.run_folder import read_finished

    lines = read_finished(out / "trajectories.jsonl")
    ids = Counter(str(line["id"]) for line in lines)
    calls = [c for line in lines for c in line["tool_calls"]]
    metrics = out / "metrics.json"
    return {
        "eval_exit": rc,
        "eval_stderr_tail": err.decode(errors="replace")[-300:] if rc else "",
        "questions": questions,
        "lost_questions": questions - len(ids),
        "duplicated_questions": sum(n - 1 for n in ids.values()),
        "eval_resumes": resumes,
        "tool_calls": len(calls),
        "failed_tool_calls": sum(c["error"] is not None for c in calls),
        "metrics_written": metrics.is_file(),
        **{f"eval_second_writer_{k}": v for k, v in writer.items()},
    }


PHASES = ("service", "eval", "grpo", "inspect")


def service_phases(args: argparse.Namespace, phases: set[str]) -> dict[str, Any]:
    """Phases 1 and 2 (those of ``phases``), sharing ``--seconds``; their part of the report."""
    started = time.monotonic()
    until = started + args.seconds
    service, root = start_service()
    counts: Counter[str] = Counter()
    result: dict[str, Any] = {}
    try:
        if "service" in phases:
            phase1_end = started + (0.3 if "eval" in phases else 1.0) * args.seconds
            threads = [
                threading.Thread(
                    target=client_loop,
                    args=(root, phase1_end, args.bad_share, args.seed + i, counts),
                )
                for i in range(args.clients)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        if "eval" in phases:
            proxy = fault_proxy(root, args.seed, counts)
            with tempfile.TemporaryDirectory(prefix="mmsr-soak-") as work:
                proxy_url = f"http://127.0.0.1:{proxy.server_address[1]}"
                result = eval_with_kills(
                    proxy_url, Path(work), args.questions, args.kills, until, args.seed
                )
            proxy.shutdown()
    finally:
        service.terminate()
        service.wait(timeout=10)
    if "service" in phases:
        result = {
            "requests": counts["good_requests"] + counts["bad_requests"],
            "bad_requests": counts["bad_requests"],
            "bad_5xx": counts["bad_5xx"],
            "good_5xx": counts["good_5xx"],
            "bad_accepted": counts["bad_accepted"],
            "busy_503": counts["busy_503"],
            "transport_errors": counts["transport_errors"],
            **result,
        }
    if "eval" in phases:
        result["proxy_faults"] = {
            k[6:]: v for k, v in sorted(counts.items()) if k.startswith("proxy_")
        }
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phases", default=",".join(PHASES), help="comma-separated phases to run")
    parser.add_argument("--seconds", type=float, default=90, help="time budget of phases 1-2")
    parser.add_argument("--clients", type=int, default=8, help="concurrent service clients")
    parser.add_argument("--bad-share", type=float, default=0.3, help="share of bad requests")
    parser.add_argument("--questions", type=int, default=40, help="questions of the eval run")
    parser.add_argument("--kills", type=int, default=3, help="SIGKILLs of the eval run")
    parser.add_argument("--grpo-steps", type=int, default=6, help="steps of the GRPO runs")
    parser.add_argument("--grpo-kills", type=int, default=3, help="SIGKILLs of the GRPO run")
    parser.add_argument("--grpo-seconds", type=float, default=420, help="time limit of phase 3")
    parser.add_argument("--inspect-threads", type=int, default=4, help="inspector clients")
    parser.add_argument("--inspect-rounds", type=int, default=3, help="requests of each route")
    parser.add_argument("--inspect-slow-s", type=float, default=5, help="slowest answer allowed")
    parser.add_argument("--inspect-seconds", type=float, default=120, help="limit of phase 4")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve)
        return 0
    phases = set(args.phases.split(","))
    if not phases or phases - set(PHASES):
        parser.error(f"--phases: choose among {', '.join(PHASES)}")
    started = time.monotonic()
    report: dict[str, Any] = {"phases": [p for p in PHASES if p in phases]}
    if phases & {"service", "eval"}:
        report |= service_phases(args, phases)
    if "grpo" in phases:
        from soak_grpo import grpo_with_kills  # beside this file, on sys.path[0]

        with tempfile.TemporaryDirectory(prefix="mmsr-soak-grpo-") as work:
            report |= grpo_with_kills(
                Path(work), args.grpo_steps, args.grpo_kills, args.seed, args.grpo_seconds
            )
    if "inspect" in phases:
        with tempfile.TemporaryDirectory(prefix="mmsr-soak-inspect-") as work:
            data = Path(work) / "questions.parquet"
            write_questions(data, 6)
            report |= inspect_phase(Path(work), data, free_port(), threads=args.inspect_threads,
                                    rounds=args.inspect_rounds, slow_s=args.inspect_slow_s,
                                    seconds=args.inspect_seconds)  # fmt: skip
    report["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(report))
    failed = (
        report.get("bad_5xx")
        or report.get("lost_questions")
        or report.get("duplicated_questions")
        or ("eval" in phases and report.get("eval_second_writer_refused") != 1)
        or report.get("grpo_ok") is False
        or report.get("inspect_ok") is False
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
