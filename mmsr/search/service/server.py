"""The search service: any ``SearchBackends`` over HTTP for many rollout workers.

Endpoints: ``POST /text_search``, ``POST /image_search``, ``POST /retrieve`` (the Search-R1
retriever's request and answer shapes), ``GET /health`` (no auth, for load balancers) and
``GET /stats``. A gate in front of the app checks the bearer token (env ``MMSR_SEARCH_TOKEN``,
constant-time compare: 401 without, 403 wrong) and the body size (413) before any body is
parsed, and gives the body a deadline (408); malformed requests are 4xx, never 5xx: a 422
names the fields and what is wrong with them but never echoes the input (it may hold lone
surrogates or numbers JSON cannot write), and every answer is written as ASCII JSON. A
request head must arrive within ``header_timeout_s`` (``mmsr.search.service.timeouts``).
Backends are synchronous and run in worker threads, at most ``max_concurrency`` at once with
``max_queue`` waiting; beyond that a request gets 503 at once (counted apart: its instant
answer is not a search latency). Query images decode to at most ``max_image_pixels``, at most
``max_decodes`` at once (``api``). A ``SearchError`` is a 502 with its (safe) message.

FastAPI and uvicorn are imported here only: ``import mmsr.search`` does not load them.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mmsr.search import imagecodec
from mmsr.search.base import SearchBackends, SearchError
from mmsr.search.service import api

logger = logging.getLogger(__name__)

TOKEN_ENV = "MMSR_SEARCH_TOKEN"
OPEN_PATHS = frozenset({"/health"})


@dataclass(frozen=True)
class ServiceConfig:
    """Limits of one service process."""

    max_body_bytes: int = 8_000_000
    """Largest request body (an image in base64 counts); larger is 413."""
    max_concurrency: int = 8
    """Backend calls running at once."""
    max_queue: int = 64
    """Requests waiting for a slot; one more is 503."""
    allow_loopback_image_urls: bool = False
    """Let ``image_url`` point at 127.0.0.1 (tests only; the SSRF guard stays on otherwise)."""
    image_fetch_timeout_s: float = 10.0
    """Timeout for downloading an ``image_url`` for backends that need pixels."""
    header_timeout_s: float = 10.0
    """Deadline for a request head (from connecting, or from the previous response)."""
    body_timeout_s: float = 30.0
    """Deadline for reading a request body; slower is 408."""
    max_image_pixels: int = imagecodec.QUERY_MAX_PIXELS
    """Most pixels a query image may decode to (a larger JPEG is decoded smaller; else 413)."""
    max_decodes: int = 2
    """Query images being decoded at once (each may briefly take several times its pixels)."""

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_concurrency", "max_image_pixels", "max_decodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


class SafeJSONResponse(JSONResponse):
    """JSON as ASCII: a lone surrogate or odd character from a request or a backend is escaped
    instead of failing the encoder (which would be a 500)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def validation_detail(err: RequestValidationError) -> list[dict[str, Any]]:
    """Where and what, for each problem of a request; never the input itself."""
    out = []
    for problem in err.errors()[:20]:
        loc = [part if isinstance(part, int) else str(part)[:100] for part in problem["loc"]]
        out.append({"loc": loc, "msg": str(problem.get("msg", "invalid"))[:300]})
    return out


async def _reply(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    base = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": base + headers})
    await send({"type": "http.response.body", "body": body})


class Gate:
    """ASGI middleware: bearer auth and a bounded body, before the app sees the request."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str | None,
        max_body_bytes: int,
        body_timeout_s: float = 30.0,
    ) -> None:
        self.app, self.max_body_bytes, self.body_timeout_s = app, max_body_bytes, body_timeout_s
        self.token = None if token is None else token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if self.token is not None and scope["path"] not in OPEN_PATHS:
            denied = self._denied(headers.get(b"authorization", b""))
            if denied is not None:
                await _reply(send, *denied)
                return
        try:
            with anyio.fail_after(self.body_timeout_s):
                body = await self._read_body(headers, receive)
        except TimeoutError:
            await _reply(send, 408, b'{"detail":"request body not received in time"}', [])
            return
        if body is None:
            await _reply(send, 413, b'{"detail":"request body too large"}', [])
            return
        await self.app(scope, _replay(body), send)

    def _denied(self, header: bytes) -> tuple[int, bytes, list[tuple[bytes, bytes]]] | None:
        assert self.token is not None
        if not header:
            return 401, b'{"detail":"missing bearer token"}', [(b"www-authenticate", b"Bearer")]
        scheme, _, value = header.partition(b" ")
        ok = scheme.lower() == b"bearer" and hmac.compare_digest(value.strip(), self.token)
        return None if ok else (403, b'{"detail":"wrong token"}', [])

    async def _read_body(self, headers: dict[bytes, bytes], receive: Receive) -> bytes | None:
        """The whole body, or None when it is (or says it is) larger than the limit."""
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body_bytes):
            return None
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    return receive


class Admission:
    """Bounded concurrency: ``max_concurrency`` threads, ``max_queue`` waiters, then 503."""

    def __init__(self, max_concurrency: int, max_queue: int) -> None:
        self.limit = max_concurrency + max_queue
        self.threads = anyio.CapacityLimiter(max_concurrency)
        self.in_flight = 0
        self.rejected = 0

    async def run(self, fn: Callable[[], Any]) -> Any:
        if self.in_flight >= self.limit:
            self.rejected += 1
            raise HTTPException(503, "search service is busy", headers={"Retry-After": "1"})
        self.in_flight += 1
        try:
            return await anyio.to_thread.run_sync(fn, limiter=self.threads)
        finally:
            self.in_flight -= 1


def _quantile(values: list[float], q: float) -> float | None:
    """The ``q`` quantile of sorted ``values`` (nearest rank), or None when empty."""
    if not values:
        return None
    return round(values[min(len(values) - 1, int(q * len(values)))], 3)


class Counters:
    """Per-endpoint request counts and recent latencies for ``/stats``."""

    def __init__(self) -> None:
        self.counts: dict[str, dict[str, int]] = {}
        self.latency: dict[str, deque[float]] = {}

    def add(self, endpoint: str, outcome: str, seconds: float) -> None:
        row = self.counts.setdefault(endpoint, {"ok": 0, "search_error": 0, "rejected": 0})
        row[outcome] = row.get(outcome, 0) + 1
        if outcome in ("ok", "search_error"):  # only calls that ran: a 503 is answered at once
            self.latency.setdefault(endpoint, deque(maxlen=1000)).append(seconds * 1000)

    def snapshot(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for endpoint, row in self.counts.items():
            lat = sorted(self.latency.get(endpoint, ()))
            out[endpoint] = {**row, "p50_ms": _quantile(lat, 0.5), "p99_ms": _quantile(lat, 0.99)}
        return out


async def _run(
    admission: Admission, counters: Counters, endpoint: str, work: Callable[[], Any]
) -> Any:
    """Runs ``work`` in a worker thread; a ``SearchError`` becomes a 502 with its message."""
    started, outcome = time.perf_counter(), "ok"
    try:
        return await admission.run(work)
    except HTTPException as err:
        outcome = "rejected" if err.status_code == 503 else "error"
        raise
    except SearchError as err:
        outcome = "search_error"
        body = {"detail": str(err), "tool": err.tool, "retryable": err.retryable}
        return SafeJSONResponse(body, status_code=502)
    finally:
        counters.add(endpoint, outcome, time.perf_counter() - started)


def create_app(
    backends: SearchBackends, *, token: str | None, config: ServiceConfig | None = None
) -> ASGIApp:
    """The ASGI app; ``token=None`` serves without auth (the CLI asks for that explicitly)."""
    config = config or ServiceConfig()
    app = FastAPI(
        title="mmsr search",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        default_response_class=SafeJSONResponse,
    )

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, err: RequestValidationError) -> SafeJSONResponse:
        return SafeJSONResponse({"detail": validation_detail(err)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def refused(_: Request, err: StarletteHTTPException) -> SafeJSONResponse:
        return SafeJSONResponse(
            {"detail": err.detail}, status_code=err.status_code, headers=err.headers
        )

    admission, counters = Admission(config.max_concurrency, config.max_queue), Counters()
    handlers = api.Handlers(
        backends,
        config.allow_loopback_image_urls,
        config.image_fetch_timeout_s,
        max_pixels=config.max_image_pixels,
        max_decodes=config.max_decodes,
    )

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "text": backends.text is not None,
            "image": backends.image is not None,
        }

    @app.get("/stats")
    async def stats() -> dict[str, Any]:
        return {
            "in_flight": admission.in_flight,
            "rejected": admission.rejected,
            "endpoints": counters.snapshot(),
            "backends": handlers.backend_stats(),
        }

    async def call(endpoint: str, work: Callable[[], Any]) -> Any:
        return await _run(admission, counters, endpoint, work)

    @app.post("/text_search")
    async def text_search(request: api.TextSearchRequest) -> Any:
        return await call("text_search", lambda: handlers.text_search(request))

    @app.post("/image_search")
    async def image_search(request: api.ImageSearchRequest) -> Any:
        return await call("image_search", lambda: handlers.image_search(request))

    @app.post("/retrieve")
    async def retrieve(request: api.RetrieveRequest) -> Any:
        return await call("retrieve", lambda: handlers.retrieve(request))

    return Gate(
        app,
        token=token,
        max_body_bytes=config.max_body_bytes,
        body_timeout_s=config.body_timeout_s,
    )


def serve(
    backends: SearchBackends,
    *,
    host: str,
    port: int,
    token: str | None,
    config: ServiceConfig | None = None,
) -> None:
    """Runs the service with uvicorn until interrupted."""
    import uvicorn

    from mmsr.search.service.timeouts import with_header_timeout

    config = config or ServiceConfig()
    app = create_app(backends, token=token, config=config)
    protocol = with_header_timeout(config.header_timeout_s)
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False, http=protocol)
