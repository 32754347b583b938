"""Reverse image search through a fake SerpAPI Google Lens on 127.0.0.1: image urls,
uploaded images, thumbnails, caching and failures."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image
from web_fakes import (
    SERPAPI_KEY,
    UPLOAD_KEY,
    FakeWeb,
    MemoryCache,
    Reply,
    Request,
    World,
    api_config,
    env_keys,
    running,
)

from mmsr.config import build
from mmsr.search import imagecodec
from mmsr.search.base import SearchError
from mmsr.search.web import WebConfig, build_web
from mmsr.types import ImageHit

IMAGE_URL = "https://images.example/flag.png"


@pytest.fixture
def fake() -> Iterator[tuple[FakeWeb, World]]:
    yield from running()


def image_search(web: FakeWeb, cache: MemoryCache | None = None, **overrides: Any) -> Any:
    config = build(WebConfig, api_config(web, **overrides))
    image = build_web(config, cache=cache, env=env_keys()).image
    assert image is not None
    return image


def test_image_url_search_returns_hits_with_thumbnails(fake: tuple[FakeWeb, World]) -> None:
    web, world = fake
    world.lens[IMAGE_URL] = ["fr", "be", "it"]
    hits = image_search(web).search(IMAGE_URL, 2)
    assert [(h.title, h.url) for h in hits] == [
        ("Lens fr", world.page_url("fr")),
        ("Lens be", world.page_url("be")),
    ]
    assert all(isinstance(h, ImageHit) for h in hits)
    # the fake thumbnail is 400x300; it comes back shrunk to at most 256 a side
    assert isinstance(hits[0].thumbnail, Image.Image) and hits[0].thumbnail.size == (256, 192)
    request = web.hits("/serpapi/search.json")[0]
    assert request.query == {"engine": "google_lens", "url": IMAGE_URL, "api_key": SERPAPI_KEY}


def test_failed_thumbnail_leaves_the_hit_without_one(fake: tuple[FakeWeb, World]) -> None:
    web, world = fake
    world.lens[IMAGE_URL] = ["missing", "ok"]
    hits = image_search(web).search(IMAGE_URL, 5)
    assert hits[0].thumbnail is None and hits[1].thumbnail is not None
    # thumbnails can be switched off entirely
    assert all(
        h.thumbnail is None for h in image_search(web, thumbnails=False).search(IMAGE_URL, 5)
    )


def test_pil_image_without_uploader_says_how_to_configure_one(
    fake: tuple[FakeWeb, World],
) -> None:
    web, _ = fake
    with pytest.raises(SearchError, match="no uploader is configured") as caught:
        image_search(web).search(Image.new("RGB", (32, 32), "red"), 5)
    assert caught.value.tool == "image"
    assert web.requests == []  # Lens was not asked


def test_uploaded_image_is_searched_and_cached(fake: tuple[FakeWeb, World]) -> None:
    web, world = fake
    uploaded: list[Request] = []

    def upload(request: Request) -> Reply:
        uploaded.append(request)
        return Reply(200, {"url": "https://files.example/u/1.png"})

    web.route("/upload", upload)
    world.lens["https://files.example/u/1.png"] = ["fr"]
    cache = MemoryCache()
    search = image_search(web, cache, uploader="http_post", upload_url=web.url("/upload"))
    picture = Image.new("RGB", (40, 30), (0, 0, 255))
    first = search.search(picture, 3)
    assert [h.title for h in first] == ["Lens fr"]
    assert uploaded[0].headers["content-type"] == "image/png"
    assert uploaded[0].headers["authorization"] == f"Bearer {UPLOAD_KEY}"
    assert imagecodec.image_digest(imagecodec.decode_image(uploaded[0].body)) == (
        imagecodec.image_digest(picture)
    )
    # the same pixels again: served from the "image" layer, no upload, no Lens call
    before = len(web.requests)
    again = search.search(Image.new("RGB", (40, 30), (0, 0, 255)), 3)
    assert len(web.requests) == before and cache.layers() == {"image"}
    assert [h.title for h in again] == ["Lens fr"]
    assert again[0].thumbnail.tobytes() == first[0].thumbnail.tobytes()


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        # the uploader answers without a url
        (Reply(200, {"id": 7}), "no usable url"),
        # the uploader answers a non-http url
        (Reply(200, "file:///tmp/x.png", {"Content-Type": "text/plain"}), "no usable url"),
        # the uploader refuses
        (Reply(413, b"too big"), "HTTP 413"),
    ],
)
def test_upload_failures_are_search_errors(
    fake: tuple[FakeWeb, World], reply: Reply, match: str
) -> None:
    web, _ = fake
    web.route("/upload", lambda r: reply)
    search = image_search(web, uploader="http_post", upload_url=web.url("/upload"))
    with pytest.raises(SearchError, match=match):
        search.search(Image.new("RGB", (8, 8)), 3)


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        # Lens found nothing: SerpAPI's error field says so; an empty list
        (None, []),
        # a 503 three times: the search fails
        (Reply(503, b""), SearchError),
        # SerpAPI reports another error in a 200
        (Reply(200, {"error": "Your account has run out of searches."}), SearchError),
        # visual_matches that is not a list
        (Reply(200, {"visual_matches": {"title": "x"}}), SearchError),
        # malformed items are skipped, not fatal
        (Reply(200, {"visual_matches": [{"title": "no link"}, 5, {"link": "ftp://x"}]}), []),
    ],
)
def test_lens_answers(fake: tuple[FakeWeb, World], reply: Reply | None, expected: Any) -> None:
    web, _ = fake
    if reply is not None:
        web.queue("/serpapi/search.json", reply, reply, reply)
    search = image_search(web)
    if expected is SearchError:
        with pytest.raises(SearchError):
            search.search(IMAGE_URL, 5)
    else:
        assert search.search(IMAGE_URL, 5) == expected


def test_non_http_image_url_is_refused(fake: tuple[FakeWeb, World]) -> None:
    web, _ = fake
    with pytest.raises(SearchError, match="scheme"):
        image_search(web).search("file:///etc/passwd", 5)
    assert web.requests == []


def test_custom_uploader_plugs_in(fake: tuple[FakeWeb, World]) -> None:
    web, world = fake

    class Bucket:
        """An uploader of one's own (e.g. a storage bucket): here, a fixed public url."""

        def __init__(self) -> None:
            self.sizes: list[int] = []

        def upload(self, data: bytes, content_type: str) -> str:
            self.sizes.append(len(data))
            return "https://bucket.example/q.png"

    bucket = Bucket()
    world.lens["https://bucket.example/q.png"] = ["it"]
    config = build(WebConfig, api_config(web))
    image = build_web(config, env=env_keys(), uploader=bucket).image
    assert image is not None
    assert [h.title for h in image.search(Image.new("RGB", (9, 9)), 1)] == ["Lens it"]
    assert len(bucket.sizes) == 1 and bucket.sizes[0] > 0
