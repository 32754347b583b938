"""Retry timing, Retry-After parsing, the rate limiter, secrets, light imports and the
``mmsr search serve`` command line."""

from __future__ import annotations

import email.utils
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from service_fakes import TOKEN, free_port, uvicorn_service

from mmsr.search.transport import RateLimiter, RetryPolicy, Secret, parse_retry_after


@pytest.mark.parametrize(
    ("value", "low", "high"),
    [
        # delta-seconds, integer and fractional
        ("3", 3.0, 3.0),
        ("0.25", 0.25, 0.25),
        # an HTTP date about ten seconds ahead (offsets from now, made when the test runs)
        (+10.0, 8.0, 10.5),
        # a date in the past means "now"
        (-100.0, 0.0, 0.0),
    ],
)
def test_parse_retry_after(value: str | float, low: float, high: float) -> None:
    if isinstance(value, float):
        value = email.utils.formatdate(time.time() + value, usegmt=True)
    seconds = parse_retry_after(value)
    assert seconds is not None and low <= seconds <= high


@pytest.mark.parametrize("value", [None, "", "soon", "-"])
def test_parse_retry_after_rejects_garbage(value: str | None) -> None:
    # absent or unreadable: no Retry-After, the normal back-off applies
    assert parse_retry_after(value) is None


@pytest.mark.parametrize(
    ("attempt", "low", "high"),
    [
        # base delay, doubling, then the cap; jitter adds up to 100 %
        (1, 0.5, 1.0),
        (2, 1.0, 2.0),
        (3, 2.0, 4.0),
        (10, 8.0, 16.0),
    ],
)
def test_backoff_grows_with_jitter_and_a_cap(attempt: int, low: float, high: float) -> None:
    policy = RetryPolicy(base_delay_s=0.5, max_delay_s=8.0)
    waits = [policy.backoff(attempt) for _ in range(50)]
    assert all(low <= w <= high for w in waits)
    assert len(set(waits)) > 1  # jittered, not constant


def test_rate_limiter_spaces_calls() -> None:
    limiter = RateLimiter(rate=40.0, burst=2)
    started = time.monotonic()
    for _ in range(10):
        limiter.acquire()
    elapsed = time.monotonic() - started
    # two calls from the burst, then eight at 40 per second: about 0.2 s
    assert 0.17 <= elapsed < 0.6


def test_secret_hides_itself() -> None:
    secret = Secret("sk-very-secret")
    assert "sk-very-secret" not in repr(secret) and "sk-very-secret" not in f"{secret}"
    assert secret.reveal() == "sk-very-secret"


def test_search_imports_stay_light() -> None:
    # the search package, its CLI and the client backends load neither torch nor fastapi
    code = (
        "import sys, mmsr.search, mmsr.search.cli, mmsr.search.service.client, mmsr.search.web\n"
        "heavy = sorted(m for m in ('torch', 'fastapi', 'uvicorn', 'transformers') "
        "if m in sys.modules)\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def _serve(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "mmsr.cli", "search", "serve", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)


def test_serve_refuses_to_start_without_a_token(tmp_path: Path) -> None:
    done = _serve("--index", str(tmp_path), env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 1 and "MMSR_SEARCH_TOKEN" in done.stderr


def test_serve_needs_an_index_or_a_config() -> None:
    done = _serve(env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 2 and "--index" in done.stderr


def test_serve_rejects_a_config_file_of_another_kind(tmp_path: Path) -> None:
    config = tmp_path / "web.yaml"
    config.write_text("backend: web")
    done = _serve("--config", str(config), env={"MMSR_SEARCH_TOKEN": "t", "PATH": "/usr/bin"})
    assert done.returncode == 1 and "must be .json or .toml" in done.stderr


def test_serve_cli_end_to_end_as_a_proxy(tmp_path: Path) -> None:
    # `mmsr search serve --config` over the http backend of another (fake) service: the CLI,
    # the registry, the client and the service, all on 127.0.0.1
    with uvicorn_service() as upstream:
        config = tmp_path / "proxy.json"
        config.write_text(json.dumps({"backend": "http", "url": upstream}))
        port = free_port()
        env = {**os.environ, "MMSR_SEARCH_TOKEN": TOKEN}
        command = [sys.executable, "-m", "mmsr.cli", "search", "serve", "--config", str(config)]
        proc = subprocess.Popen(
            [*command, "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            root = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while proc.poll() is None and time.monotonic() < deadline:
                try:
                    if httpx.get(root + "/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            body = {"query": "eiffel", "k": 2}
            response = httpx.post(
                root + "/text_search", json=body, headers={"Authorization": f"Bearer {TOKEN}"}
            )
            assert response.status_code == 200
            assert [h["title"] for h in response.json()["hits"]] == ["eiffel #0", "eiffel #1"]
        finally:
            proc.terminate()
            proc.wait(timeout=10)
