"""A real HTTP server on 127.0.0.1 that answers like SerpAPI, Serper, Jina Reader and an
OpenAI-compatible chat API, plus plain web pages and thumbnails — for the web backend tests.

Routes are matched by longest path prefix. ``queue`` injects one-off replies (429, 500,
malformed bodies, slow answers) in front of a route; every request is recorded.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from PIL import Image

SERPAPI_KEY = "serpapi-SECRET-6f1e2d"
SERPER_KEY = "serper-SECRET-91ab77"
JINA_KEY = "jina-SECRET-c0ffee"
LLM_KEY = "llm-SECRET-5eed42"
UPLOAD_KEY = "upload-SECRET-77aa01"
ALL_KEYS = (SERPAPI_KEY, SERPER_KEY, JINA_KEY, LLM_KEY, UPLOAD_KEY)


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    body: Any = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    repeat: int = 1  # the body is sent this many times (huge pages, streamed)

    def payload(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        self.headers.setdefault("Content-Type", "application/json")
        return json.dumps(self.body).encode()


Handler = Callable[[Request], Reply]


class FakeWeb:
    """The server; ``url(path)`` gives an address on it."""

    def __init__(self) -> None:
        self.routes: dict[str, Handler] = {}
        self.queued: dict[str, deque[Reply]] = {}
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def route(self, prefix: str, handler: Handler) -> None:
        self.routes[prefix] = handler

    def queue(self, prefix: str, *replies: Reply) -> None:
        with self._lock:
            self.queued.setdefault(prefix, deque()).extend(replies)

    def hits(self, prefix: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path.startswith(prefix)]

    def dispatch(self, request: Request) -> Reply:
        with self._lock:
            self.requests.append(request)
            prefixes = [p for p in self.routes if request.path.startswith(p)]
            prefix = max(prefixes, key=len) if prefixes else None
            queued = self.queued.get(prefix or "")
            if queued:
                return queued.popleft()
        if prefix is None:
            return Reply(404, {"error": "no route"})
        return self.routes[prefix](request)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        web = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                headers = {k.lower(): v for k, v in self.headers.items()}
                reply = web.dispatch(Request(self.command, parts.path, query, headers, body))
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                payload = reply.payload()
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(payload) * reply.repeat))
                    self.end_headers()
                    for _ in range(reply.repeat):
                        self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST = do_PUT = _serve

        return _Handler

    def __enter__(self) -> FakeWeb:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def png_bytes(color: tuple[int, int, int], size: tuple[int, int] = (400, 300)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


# --- the fake APIs ---------------------------------------------------------------------------


def html_page(title: str, body: str) -> str:
    return (
        f"<html><head><title>{title}</title><script>var tracking = 1;</script></head>"
        f"<body><nav>Menu</nav><p>{body}</p></body></html>"
    )


@dataclass
class World:
    """What the fake APIs know: query -> links, url -> page text, image url -> matches."""

    web: FakeWeb
    results: dict[str, list[str]] = field(default_factory=dict)  # query -> page names
    pages: dict[str, str] = field(default_factory=dict)  # page name -> text
    lens: dict[str, list[str]] = field(default_factory=dict)  # image url -> page names

    def page_url(self, name: str) -> str:
        return self.web.url(f"/page/{name}")

    def organic(self, query: str, n: int) -> list[dict[str, Any]]:
        names = self.results.get(query, [])[:n]
        return [
            {
                "position": i + 1,
                "title": f"Title {name}",
                "link": self.page_url(name),
                "snippet": f"snippet {name}",
            }
            for i, name in enumerate(names)
        ]


def _unauthorised() -> Reply:
    return Reply(401, {"error": "Invalid API key. Your API key should be here: ..."})


def serpapi(world: World) -> Handler:
    def handle(req: Request) -> Reply:
        if req.query.get("api_key") != SERPAPI_KEY:
            return _unauthorised()
        meta = {"search_metadata": {"status": "Success"}}
        if req.query.get("q") == "echo":  # an error message quoting the request, key included
            return Reply(200, {**meta, "error": f"Bad request: {req.query}"})
        if req.query.get("engine") == "google_lens":
            names = world.lens.get(req.query.get("url", ""), [])
            if not names:
                return Reply(200, {**meta, "error": "Google Lens hasn't returned any results."})
            matches = [
                {
                    "position": i + 1,
                    "title": f"Lens {name}",
                    "link": world.page_url(name),
                    "source": "example",
                    "thumbnail": world.web.url(f"/thumb/{name}.png"),
                }
                for i, name in enumerate(names)
            ]
            return Reply(200, {**meta, "visual_matches": matches})
        organic = world.organic(req.query.get("q", ""), int(req.query.get("num", "10")))
        if not organic:
            return Reply(
                200, {**meta, "error": "Google hasn't returned any results for this query."}
            )
        return Reply(200, {**meta, "organic_results": organic})

    return handle


def serper(world: World) -> Handler:
    def handle(req: Request) -> Reply:
        if req.headers.get("x-api-key") != SERPER_KEY:
            return Reply(403, {"message": "Unauthorized.", "statusCode": 403})
        body = req.json()
        return Reply(
            200, {"searchParameters": body, "organic": world.organic(body["q"], body["num"])}
        )

    return handle


def jina(world: World) -> Handler:
    def handle(req: Request) -> Reply:
        target = unquote(req.path[len("/jina/") :])
        name = target.rsplit("/", 1)[-1]
        if name not in world.pages:
            return Reply(422, {"code": 422, "name": "AssertionFailureError", "message": "fail"})
        data = {"title": f"Page {name}", "url": target, "content": world.pages[name]}
        return Reply(200, {"code": 200, "status": 20000, "data": data})

    return handle


def chat(req: Request) -> Reply:
    """Answers with seven sentences naming the page title, so the five-sentence cut shows."""
    prompt = req.json()["messages"][-1]["content"]
    title = prompt.split("Page title: ", 1)[1].split("\n", 1)[0]
    sentences = " ".join(f"Fact {i} about {title}." for i in range(1, 8))
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": sentences},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
    }
    return Reply(200, body)


def pages(world: World) -> Handler:
    def handle(req: Request) -> Reply:
        name = req.path.rsplit("/", 1)[-1]
        if name not in world.pages:
            return Reply(404, "not found", {"Content-Type": "text/plain"})
        html = html_page(f"Page {name}", world.pages[name])
        return Reply(200, html, {"Content-Type": "text/html; charset=utf-8"})

    return handle


def thumbs(req: Request) -> Reply:
    if "missing" in req.path:
        return Reply(404, b"")
    return Reply(200, png_bytes((200, 30, 30)), {"Content-Type": "image/png"})


def install(web: FakeWeb) -> World:
    world = World(web)
    web.route("/serpapi/search.json", serpapi(world))
    web.route("/serper/search", serper(world))
    web.route("/jina/", jina(world))
    web.route("/v1/chat/completions", chat)
    web.route("/page/", pages(world))
    web.route("/thumb/", thumbs)
    return world


def api_config(web: FakeWeb, **overrides: Any) -> dict[str, Any]:
    """``WebConfig`` keys pointing every API at the fake server, with tiny back-offs."""
    config: dict[str, Any] = {
        "serpapi_url": web.url("/serpapi/search.json"),
        "serper_url": web.url("/serper/search"),
        "jina_url": web.url("/jina/"),
        "llm_base_url": web.url("/v1"),
        "llm_model": "fake-model",
        "timeout_s": 2.0,
        "retry_attempts": 3,
        "retry_base_delay_s": 0.01,
        "retry_max_delay_s": 0.05,
        "max_retry_after_s": 2.0,
        "rate_per_s": 1000.0,
        "trust_env": False,
        "allow_loopback": True,
    }
    config.update(overrides)
    return config


def env_keys() -> dict[str, str]:
    return {
        "SERPAPI_API_KEY": SERPAPI_KEY,
        "SERPER_API_KEY": SERPER_KEY,
        "JINA_API_KEY": JINA_KEY,
        "OPENAI_API_KEY": LLM_KEY,
        "MMSR_UPLOAD_TOKEN": UPLOAD_KEY,
    }


@dataclass
class MemoryCache:
    """A tiny in-memory ``LayerCache``; values go through JSON as in a real store."""

    data: dict[tuple[str, str], str] = field(default_factory=dict)

    def get_or_compute(self, layer: str, key: str, compute: Callable[[], Any]) -> Any:
        if (layer, key) not in self.data:
            self.data[(layer, key)] = json.dumps(compute())
        return json.loads(self.data[(layer, key)])

    def layers(self) -> set[str]:
        return {layer for layer, _ in self.data}


def running() -> Iterator[tuple[FakeWeb, World]]:
    with FakeWeb() as web:
        yield web, install(web)
