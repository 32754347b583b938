"""The search service through a real uvicorn process on 127.0.0.1: endpoints, Search-R1
compatibility, auth, bad requests (4xx, never 5xx), overload (503) and stats."""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio
import httpx
import pytest
from PIL import Image
from service_fakes import TOKEN, uvicorn_service

from mmsr.search.base import SearchBackends
from mmsr.search.service.server import create_app
from mmsr.types import ImageHit

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def root() -> Iterator[str]:
    with uvicorn_service() as url:
        yield url


def post(root: str, path: str, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(root + path, json=body, headers=AUTH if headers is None else headers)


def png_header_only(width: int, height: int) -> str:
    """A PNG that claims ``width`` x ``height`` pixels but holds no image data (a bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")
    return base64.b64encode(png).decode()


def png_b64(size: tuple[int, int] = (20, 10)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 200, 10)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_health_needs_no_token(root: str) -> None:
    response = httpx.get(root + "/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "text": True, "image": True}


def test_text_search(root: str) -> None:
    response = post(root, "/text_search", {"query": "eiffel", "k": 2, "question": "how tall?"})
    assert response.status_code == 200
    assert response.json() == {
        "hits": [
            {
                "title": "eiffel #0",
                "url": "https://example.org/0",
                "summary": "about eiffel; q=how tall?",
            },
            {
                "title": "eiffel #1",
                "url": "https://example.org/1",
                "summary": "about eiffel; q=how tall?",
            },
        ]
    }


@pytest.mark.parametrize(
    ("body", "shape"),
    [
        # Search-R1's batched form: one list of scored passages per query
        ({"queries": ["a", "b"], "topk": 3, "return_scores": True}, [3, 3]),
        # the single-query form
        ({"query": "a", "topk": 2}, [2]),
    ],
)
def test_retrieve_is_search_r1_compatible(
    root: str, body: dict[str, Any], shape: list[int]
) -> None:
    response = post(root, "/retrieve", body)
    assert response.status_code == 200
    result = response.json()["result"]
    assert [len(r) for r in result] == shape
    first = result[0][0]
    assert set(first) == {"document", "score"}
    assert set(first["document"]) == {"id", "title", "url", "contents"}
    # Search-R1 reads the title as the first line of contents
    assert first["document"]["contents"].split("\n")[0] == '"a #0"'
    assert [p["score"] for p in result[0]] == sorted((p["score"] for p in result[0]), reverse=True)


def test_retrieve_without_scores_returns_documents(root: str) -> None:
    response = post(root, "/retrieve", {"queries": ["a"], "topk": 1, "return_scores": False})
    assert set(response.json()["result"][0][0]) == {"id", "title", "url", "contents"}


def test_image_search_by_base64(root: str) -> None:
    response = post(root, "/image_search", {"image_base64": png_b64((20, 10)), "k": 2})
    assert response.status_code == 200
    hits = response.json()["hits"]
    assert [h["title"] for h in hits] == ["20x10 #0", "20x10 #1"]
    thumbnail = Image.open(io.BytesIO(base64.b64decode(hits[0]["thumbnail_base64"])))
    assert thumbnail.size == (20, 10)


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        # no Authorization header
        ({}, 401),
        # a wrong token
        ({"Authorization": "Bearer not-the-token"}, 403),
        # the right token under another scheme
        ({"Authorization": f"Basic {TOKEN}"}, 403),
        # a token prefix
        ({"Authorization": f"Bearer {TOKEN[:-1]}"}, 403),
        # the right token
        (AUTH, 200),
    ],
)
def test_auth(root: str, headers: dict[str, str], status: int) -> None:
    assert post(root, "/text_search", {"query": "x"}, headers).status_code == status
    assert httpx.get(root + "/stats", headers=headers).status_code == status
    # auth is checked before the body is parsed: garbage gets 401/403, not 422
    garbage = httpx.post(root + "/retrieve", content=b"{", headers=headers)
    assert garbage.status_code == (422 if status == 200 else status)


def test_missing_token_says_bearer(root: str) -> None:
    response = post(root, "/text_search", {"query": "x"}, {})
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        # not JSON at all
        ("/text_search", b"{not json", 422),
        # a JSON array instead of an object
        ("/text_search", b"[1, 2]", 422),
        # no query
        ("/text_search", b'{"k": 3}', 422),
        # a blank query
        ("/text_search", b'{"query": "   "}', 422),
        # a query longer than 2,000 characters
        ("/text_search", json.dumps({"query": "x" * 2001}).encode(), 422),
        # k out of range, or not a number
        ("/text_search", b'{"query": "x", "k": 0}', 422),
        ("/text_search", b'{"query": "x", "k": 1000}', 422),
        ("/text_search", b'{"query": "x", "k": "many"}', 422),
        # an unknown field
        ("/text_search", b'{"query": "x", "kk": 3}', 422),
        # neither form of retrieve, both forms, an empty list, too many queries
        ("/retrieve", b'{"topk": 3}', 422),
        ("/retrieve", b'{"query": "a", "queries": ["b"]}', 422),
        ("/retrieve", b'{"queries": []}', 422),
        ("/retrieve", json.dumps({"queries": ["q"] * 65}).encode(), 422),
        # image: none given, both given, bad base64, base64 of a non-image
        ("/image_search", b'{"k": 2}', 422),
        ("/image_search", b'{"image_base64": "aGk=", "image_url": "https://x/y.png"}', 422),
        ("/image_search", b'{"image_base64": "%%%not base64%%%"}', 400),
        (
            "/image_search",
            json.dumps({"image_base64": base64.b64encode(b"hi").decode()}).encode(),
            400,
        ),
        # image urls that are not http(s), or point at this machine (SSRF guard)
        ("/image_search", b'{"image_url": "file:///etc/passwd"}', 400),
        ("/image_search", b'{"image_url": "http://127.0.0.1:1/x.png"}', 400),
        # a body over the service's 200,000-byte limit
        ("/image_search", json.dumps({"image_base64": "A" * 300_000}).encode(), 413),
        # an unknown endpoint
        ("/nothing", b"{}", 404),
    ],
)
def test_bad_requests_are_4xx(root: str, path: str, body: bytes, status: int) -> None:
    headers = {**AUTH, "Content-Type": "application/json"}
    assert httpx.post(root + path, content=body, headers=headers).status_code == status


@pytest.mark.parametrize(
    ("size", "match"),
    [
        # 10^10 pixels claimed by a 60-byte file: Pillow's own bomb check
        ((100_000, 100_000), "more than 4194304 pixels"),
        # just over the query images' 2048x2048: refused from the header (the file holds no
        # pixels, so a decode would have said "truncated", not this)
        ((2_049, 2_048), "2049x2048 pixels, more than the 4194304 allowed"),
    ],
)
def test_image_bombs_are_413_before_decoding(root: str, size: tuple[int, int], match: str) -> None:
    response = post(root, "/image_search", {"image_base64": png_header_only(*size)})
    assert response.status_code == 413 and match in response.json()["detail"]


def test_chunked_oversized_body_is_413(root: str) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"image_base64": "'
        for _ in range(30):
            yield b"A" * 10_000
        yield b'"}'

    response = httpx.post(root + "/image_search", content=chunks(), headers=AUTH)
    assert response.status_code == 413


def test_search_error_is_502_with_its_message(root: str) -> None:
    response = post(root, "/text_search", {"query": "fail"})
    assert response.status_code == 502
    assert response.json() == {
        "detail": "upstream search API is down",
        "tool": "text",
        "retryable": True,
    }


def test_stats_count_requests(root: str) -> None:
    post(root, "/text_search", {"query": "counted"})
    stats = httpx.get(root + "/stats", headers=AUTH).json()
    row = stats["endpoints"]["text_search"]
    assert row["ok"] >= 1 and row["p50_ms"] is not None
    assert stats["in_flight"] == 0


def test_overload_is_503_and_nothing_else_fails() -> None:
    # one worker and one waiting seat: of six 0.6-s searches at once, at most two are served
    with uvicorn_service(max_concurrency=1, max_queue=1) as url:
        with ThreadPoolExecutor(6) as pool:
            codes = list(
                pool.map(
                    lambda _: post(url, "/text_search", {"query": "slow 0.6"}).status_code, range(6)
                )
            )
        assert sorted(set(codes)) == [200, 503]
        assert codes.count(200) <= 2 and codes.count(503) >= 4
        busy = post(url, "/text_search", {"query": "x"})
        assert busy.status_code == 200  # the service recovers
        stats = httpx.get(url + "/stats", headers=AUTH).json()
        assert stats["rejected"] == codes.count(503)


class UrlImage:
    """An image backend that searches by url (as the web backend does): it gets the url."""

    accepts_image_urls = True

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def search(self, image: Any, k: int) -> list[ImageHit]:
        self.seen.append(image)
        return [ImageHit("by url", "https://img.example/0", None)][:k]


def test_image_urls_go_to_url_backends_unfetched_in_process() -> None:
    # in-process (no uvicorn): the ASGI app alone, with a url-searching image backend
    backend = UrlImage()
    app = create_app(SearchBackends(image=backend), token=TOKEN)

    async def calls() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as http:
            body = {"image_url": "https://cdn.example/a.png", "k": 1}
            return [
                await http.post("/image_search", json=body, headers=AUTH),
                await http.post("/text_search", json={"query": "x"}, headers=AUTH),
                await http.post("/retrieve", json={"query": "x"}, headers=AUTH),
                await http.get("/health"),
            ]

    image, text, retrieve, health = anyio.run(calls)
    assert image.status_code == 200
    assert image.json() == {
        "hits": [{"title": "by url", "url": "https://img.example/0", "thumbnail_base64": None}]
    }
    assert backend.seen == ["https://cdn.example/a.png"]
    # a tool the service lacks is 404, and health says which tools exist
    assert text.status_code == 404 and retrieve.status_code == 404
    assert health.json() == {"status": "ok", "text": False, "image": True}


def test_no_token_configured_means_open_service() -> None:
    # what --insecure-no-auth serves: no Authorization needed
    app = create_app(SearchBackends(image=UrlImage()), token=None)

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as http:
            return await http.post("/image_search", json={"image_url": "https://x.example/a.png"})

    assert anyio.run(call).status_code == 200
