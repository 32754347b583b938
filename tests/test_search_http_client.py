"""The ``http`` backend against the real service (a uvicorn process serving fake backends)
and against a misbehaving server: same hits back, errors as ``SearchError``."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from PIL import Image
from service_fakes import TOKEN, FakeText, free_port, uvicorn_service
from web_fakes import FakeWeb, Reply

from mmsr.config import ConfigError, build
from mmsr.search.base import ImageSearchBackend, SearchBackends, SearchError, TextSearchBackend
from mmsr.search.registry import build_search
from mmsr.search.service.client import HttpConfig, build_http
from mmsr.types import ImageHit, TextHit


@pytest.fixture(scope="module")
def root() -> Iterator[str]:
    with uvicorn_service() as url:
        yield url


def client(url: str, token: str | None = TOKEN, **overrides: Any) -> SearchBackends:
    fields: dict[str, Any] = {"url": url, "retry_base_delay_s": 0.02, "timeout_s": 5.0}
    fields.update(overrides)
    env = {} if token is None else {"MMSR_SEARCH_TOKEN": token}
    return build_http(build(HttpConfig, fields), env=env)


def test_text_hits_are_the_backends_own(root: str) -> None:
    text = client(root).text
    assert isinstance(text, TextSearchBackend)
    got = text.search("eiffel", 3, question="how tall?")
    assert got == FakeText().search("eiffel", 3, question="how tall?")
    assert all(isinstance(h, TextHit) for h in got)


def test_image_hits_carry_thumbnails(root: str) -> None:
    image = client(root).image
    assert isinstance(image, ImageSearchBackend)
    query = Image.new("RGB", (12, 7), (1, 2, 3))
    hits = image.search(query, 2)
    assert [h.title for h in hits] == ["12x7 #0", "12x7 #1"]
    assert all(isinstance(h, ImageHit) for h in hits)
    assert hits[0].thumbnail.convert("RGB").tobytes() == query.tobytes()


def test_a_query_larger_than_the_service_decodes_is_sent_scaled_down(root: str) -> None:
    # 6 megapixels: the service decodes at most 2048x2048 of a PNG (413 above), so the client
    # sends the picture scaled to fit, aspect kept
    image = client(root).image
    assert isinstance(image, ImageSearchBackend)
    (hit,) = image.search(Image.new("RGB", (3000, 2000), (9, 9, 9)), 1)
    assert hit.title == "2508x1672 #0"


@pytest.mark.parametrize(
    ("token", "query", "match", "retryable"),
    [
        # the backend's own failure keeps its message and is not retried by the client
        (TOKEN, "fail", "upstream search API is down", False),
        # a wrong token
        ("wrong", "x", "HTTP 403", False),
        # no token at all
        (None, "x", "HTTP 401", False),
    ],
)
def test_service_errors_become_search_errors(
    root: str, token: str | None, query: str, match: str, retryable: bool
) -> None:
    text = client(root, token).text
    assert text is not None
    with pytest.raises(SearchError, match=match) as caught:
        text.search(query, 2)
    assert caught.value.retryable is retryable
    assert text.stats()["search_service"]["calls"] == 1


def test_no_service_listening_is_a_retryable_search_error() -> None:
    text = client(f"http://127.0.0.1:{free_port()}", retry_attempts=2).text
    assert text is not None
    with pytest.raises(SearchError, match="connection failed") as caught:
        text.search("x", 1)
    assert caught.value.retryable


def test_busy_service_is_retried_until_served() -> None:
    # one worker, no waiting seat: concurrent calls get 503 and retry with back-off
    with uvicorn_service(max_concurrency=1, max_queue=0) as url:
        text = client(url, retry_attempts=30, retry_base_delay_s=0.05).text
        assert text is not None
        with ThreadPoolExecutor(3) as pool:
            results = list(pool.map(lambda _: text.search("slow 0.2", 1), range(3)))
        assert all(len(r) == 1 for r in results)
        assert text.stats()["search_service"]["retries"] >= 1


@pytest.mark.parametrize(
    "reply",
    [
        # hits that are not a list
        Reply(200, {"hits": 5}),
        # a hit without a summary
        Reply(200, {"hits": [{"title": "t", "url": "u"}]}),
        # not JSON
        Reply(200, b"<html>", {"Content-Type": "text/html"}),
        # a proxy's error page
        Reply(500, b"<h1>Internal Server Error</h1>"),
    ],
)
def test_malformed_service_answers_are_search_errors(reply: Reply) -> None:
    with FakeWeb() as web:
        web.route("/text_search", lambda r: reply)
        text = client(web.url(""), retry_attempts=1).text
        assert text is not None
        with pytest.raises(SearchError):
            text.search("x", 1)


def test_config() -> None:
    # the registry builds the client from a plain mapping; tools can be narrowed
    only_text = build_search({"backend": "http", "url": "http://127.0.0.1:9", "tools": ["text"]})
    assert only_text.image is None and only_text.text is not None
    # unknown keys and a missing url are errors
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) timeout"):
        build_search({"backend": "http", "url": "http://x", "timeout": 3})
    with pytest.raises(ConfigError, match=r"missing config key\(s\) url"):
        build_search({"backend": "http"})
