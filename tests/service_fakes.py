"""Small deterministic backends for the service tests, and a script that serves them with
uvicorn: ``python tests/service_fakes.py PORT MAX_CONCURRENCY MAX_QUEUE [HEAD_S BODY_S]``.

The token comes from ``MMSR_SEARCH_TOKEN`` as in production.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from mmsr.search.base import SearchBackends, SearchError
from mmsr.types import ImageHit, TextHit

TOKEN = "service-token-3b9f"


class FakeText:
    """Hits named after the query; "fail" raises SearchError, "slow N" sleeps N seconds."""

    def search(self, query: str, k: int, question: str | None = None) -> list[TextHit]:
        if query == "fail":
            raise SearchError("upstream search API is down", retryable=True)
        if query.startswith("slow"):
            time.sleep(float(query.split()[1]))
        return [
            TextHit(f"{query} #{i}", f"https://example.org/{i}", f"about {query}; q={question}")
            for i in range(min(k, 10))
        ]


class FakeImage:
    """One hit per requested k, titled with the query's size; the thumbnail is the query."""

    def search(self, image: Any, k: int) -> list[ImageHit]:
        if not isinstance(image, Image.Image):
            raise TypeError("FakeImage needs a PIL image")
        w, h = image.size
        thumb = image.copy()
        return [ImageHit(f"{w}x{h} #{i}", f"https://img.example/{i}", thumb) for i in range(k)]


def fake_backends() -> SearchBackends:
    return SearchBackends(image=FakeImage(), text=FakeText())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def uvicorn_service(
    max_concurrency: int = 4,
    max_queue: int = 16,
    header_timeout_s: float = 10.0,
    body_timeout_s: float = 30.0,
) -> Iterator[str]:
    """Starts this file as a uvicorn process on 127.0.0.1 and yields its root url."""
    port = free_port()
    env = {**os.environ, "MMSR_SEARCH_TOKEN": TOKEN}
    limits = [max_concurrency, max_queue, header_timeout_s, body_timeout_s]
    args = [sys.executable, str(Path(__file__)), str(port), *map(str, limits)]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    root = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(root + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"service did not start: {proc.stderr.read()!r}")  # type: ignore[union-attr]
            time.sleep(0.05)
        yield root
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main() -> None:
    from mmsr.search.service.server import ServiceConfig, serve

    port, concurrency, queue = (int(a) for a in sys.argv[1:4])
    head_s, body_s = (float(a) for a in sys.argv[4:6])
    config = ServiceConfig(
        max_concurrency=concurrency,
        max_queue=queue,
        max_body_bytes=200_000,
        header_timeout_s=head_s,
        body_timeout_s=body_s,
    )
    serve(
        fake_backends(),
        host="127.0.0.1",
        port=port,
        token=os.environ["MMSR_SEARCH_TOKEN"],
        config=config,
    )


if __name__ == "__main__":
    main()
