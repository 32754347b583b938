"""The web backends against a real HTTP server on 127.0.0.1 that answers like SerpAPI,
Serper, Jina Reader and an OpenAI-compatible chat API (tests/web_fakes.py)."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from web_fakes import (
    ALL_KEYS,
    SERPER_KEY,
    FakeWeb,
    MemoryCache,
    Reply,
    World,
    api_config,
    env_keys,
    jina,
    running,
)

from mmsr.config import ConfigError, build
from mmsr.search.base import SearchBackends, SearchError
from mmsr.search.registry import parse_search_config
from mmsr.search.web import WebConfig, build_web
from mmsr.types import TextHit


@pytest.fixture
def fake() -> Iterator[tuple[FakeWeb, World]]:
    yield from running()


def backends(web: FakeWeb, cache: MemoryCache | None = None, **overrides: Any) -> SearchBackends:
    config = build(WebConfig, api_config(web, **overrides))
    return build_web(config, cache=cache, env=env_keys())


def text_search(web: FakeWeb, **overrides: Any) -> Any:
    text = backends(web, **overrides).text
    assert text is not None
    return text


def fill(world: World, n: int, query: str = "eiffel tower height") -> list[str]:
    names = [f"p{i}" for i in range(n)]
    world.results[query] = names
    for name in names:
        world.pages[name] = f"The page {name} says the tower is 330 metres tall."
    return names


# --- the text chain ----------------------------------------------------------------------------


def test_text_chain_returns_five_summaries_in_rank_order(fake: tuple[FakeWeb, World]) -> None:
    web, world = fake
    fill(world, 8)
    hits = text_search(web).search("eiffel tower height", 10, question="How tall is it?")
    assert [h.url for h in hits] == [world.page_url(f"p{i}") for i in range(5)]
    assert all(isinstance(h, TextHit) and h.title == f"Title p{i}" for i, h in enumerate(hits))
    # the fake LLM writes seven sentences; five are kept
    assert hits[0].summary.count("Fact") == 5 and "Page p0" in hits[0].summary
    serper_req = web.hits("/serper/search")[0]
    assert serper_req.json() == {"q": "eiffel tower height", "num": 10}
    prompt = web.hits("/v1/chat/completions")[0].json()["messages"][-1]["content"]
    assert "How tall is it?" in prompt and "eiffel tower height" in prompt


def test_summarizer_gets_only_the_first_30000_characters(fake: tuple[FakeWeb, World]) -> None:
    web, world = fake
    world.results["q"] = ["long"]
    world.pages["long"] = "a" * 29_990 + "KEEP" + "b" * 20 + "DROP" + "c" * 50_000
    text_search(web).search("q", 5)
    payload = web.hits("/v1/chat/completions")[0].json()
    prompt = payload["messages"][-1]["content"]
    assert "KEEP" in prompt and "DROP" not in prompt
    assert payload["model"] == "fake-model" and payload["temperature"] == 0


@pytest.mark.parametrize(
    ("available", "broken", "expected"),
    [
        # pages 1 and 3 fail at the reader: the next urls (5, 6) take their places
        (8, {"p1", "p3"}, ["p0", "p2", "p4", "p5", "p6"]),
        # only three results exist: three summaries, no error
        (3, set(), ["p0", "p1", "p2"]),
        # six results, four broken: the list ends with two summaries
        (6, {"p0", "p1", "p2", "p3"}, ["p4", "p5"]),
    ],
)
def test_failed_pages_are_replaced_until_the_list_ends(
    fake: tuple[FakeWeb, World], available: int, broken: set[str], expected: list[str]
) -> None:
    web, world = fake
    fill(world, available, "q")
    for name in broken:
        del world.pages[name]
    hits = text_search(web).search("q", 5)
    assert [h.url for h in hits] == [world.page_url(n) for n in expected]


def test_llm_failure_on_one_page_replaces_that_page(fake: tuple[FakeWeb, World]) -> None:
    web, world = fake
    fill(world, 6, "q")
    # one malformed LLM answer (no retry: the body is a 200); that page gives way to p5
    web.queue(
        "/v1/chat/completions", Reply(200, b"{not json", {"Content-Type": "application/json"})
    )
    hits = text_search(web, concurrency=1).search("q", 5)
    assert [h.url for h in hits] == [world.page_url(f"p{i}") for i in range(1, 6)]


def test_no_results_is_an_empty_list_and_all_failures_an_error(
    fake: tuple[FakeWeb, World],
) -> None:
    web, world = fake
    text = text_search(web)
    # the API knows nothing: no hits, not an error
    assert text.search("unknown query", 5) == []
    # results exist but every page fails: an error the rollout can show
    world.results["q"] = ["gone1", "gone2"]
    with pytest.raises(SearchError, match="all 2 pages failed"):
        text.search("q", 5)
    # an empty query never reaches the API
    with pytest.raises(SearchError, match="empty"):
        text.search("   ", 5)


def test_429_with_retry_after_is_honoured(fake: tuple[FakeWeb, World]) -> None:
    web, world = fake
    fill(world, 1, "q")
    web.queue("/serper/search", Reply(429, {"message": "slow down"}, {"Retry-After": "0.4"}))
    text = text_search(web)
    started = time.monotonic()
    hits = text.search("q", 5)
    assert len(hits) == 1
    assert time.monotonic() - started >= 0.4  # waited for Retry-After, not the 0.01 s back-off
    stats = text.stats()["serper"]
    assert stats["calls"] == 2 and stats["retries"] == 1 and stats["failures"] == 0


@pytest.mark.parametrize(
    ("replies", "match", "calls"),
    [
        # a Retry-After beyond max_retry_after_s fails at once instead of hanging
        ([Reply(429, {}, {"Retry-After": "3600"})], "too long", 1),
        # persistent 500s: three attempts, then an error
        ([Reply(500, b"oops")] * 3, "HTTP 500", 3),
        # a 401 is not retried
        ([Reply(401, {"message": "bad key"})], "HTTP 401", 1),
        # a 200 with a malformed body
        ([Reply(200, b"<html>", {"Content-Type": "application/json"})], "malformed JSON", 1),
        # a 200 whose JSON is not an object
        ([Reply(200, [1, 2])], "not a JSON object", 1),
    ],
)
def test_search_api_failures_become_search_errors(
    fake: tuple[FakeWeb, World], replies: list[Reply], match: str, calls: int
) -> None:
    web, world = fake
    fill(world, 2, "q")
    web.queue("/serper/search", *replies)
    with pytest.raises(SearchError, match=match):
        text_search(web).search("q", 5)
    assert len(web.hits("/serper/search")) == calls


def test_timeouts_are_retried_then_fail(fake: tuple[FakeWeb, World]) -> None:
    web, world = fake
    fill(world, 1, "q")
    slow = Reply(200, {"organic": []}, delay_s=0.6)
    web.queue("/serper/search", slow, slow)
    text = text_search(web, timeout_s=0.2, retry_attempts=2)
    started = time.monotonic()
    with pytest.raises(SearchError, match="timed out") as caught:
        text.search("q", 5)
    assert caught.value.retryable
    assert time.monotonic() - started < 1.5
    assert text.stats()["serper"]["calls"] == 2


def test_serpapi_engine_and_its_no_results_error_field(fake: tuple[FakeWeb, World]) -> None:
    web, world = fake
    fill(world, 2, "q")
    text = text_search(web, text_engine="serpapi")
    assert len(text.search("q", 5)) == 2
    request = web.hits("/serpapi/search.json")[0]
    assert request.query["engine"] == "google" and request.query["q"] == "q"
    # SerpAPI answers "no results" as a 200 with an error field: that is an empty list
    assert text.search("nothing here", 5) == []


def test_cache_layers_make_a_repeat_search_free(fake: tuple[FakeWeb, World]) -> None:
    web, world = fake
    fill(world, 6, "q")
    cache = MemoryCache()
    text = text_search(web, cache=cache)
    first = text.search("q", 5, question="How tall?")
    before = len(web.requests)
    assert text.search("q", 5, question="How tall?") == first
    assert len(web.requests) == before  # nothing went to any API
    assert cache.layers() == {"text_query", "page", "summary"}
    # another question re-summarises the cached pages but does not search or read again
    text.search("q", 5, question="Who built it?")
    assert len(web.hits("/serper")) == 1 and len(web.hits("/jina")) == 5
    assert len(web.hits("/v1/chat")) == 10


def test_keys_are_never_logged_cached_returned_or_in_errors(
    fake: tuple[FakeWeb, World], caplog: pytest.LogCaptureFixture
) -> None:
    web, world = fake
    fill(world, 3, "q")
    world.lens["https://img.example/x.png"] = ["p0"]
    caplog.set_level(logging.DEBUG)
    cache = MemoryCache()
    found = backends(web, cache=cache, text_engine="serpapi")
    assert found.text is not None and found.image is not None
    seen: list[str] = [
        repr(found.text.search("q", 5)),
        repr(found.image.search("https://img.example/x.png", 3)),
    ]
    # failures: SerpAPI answering 401, then 500 three times, then an error quoting the key
    for reply in (Reply(401, {"error": "Invalid API key"}), *[Reply(500, b"")] * 3):
        web.queue("/serpapi/search.json", reply)
    for query in ("q2", "q3", "echo"):
        with pytest.raises(SearchError) as caught:
            found.text.search(query, 5)
        seen.append(str(caught.value))
    seen += [repr(found.text), repr(vars(found.text)), repr(found.text.stats())]
    seen += list(cache.data.values()) + [r.getMessage() for r in caplog.records]
    assert any("HTTP Request" in r.getMessage() for r in caplog.records)  # httpx did log urls
    for key in ALL_KEYS:
        assert not any(key in text for text in seen), key


def test_missing_key_names_the_variable(fake: tuple[FakeWeb, World]) -> None:
    web, _ = fake
    config = build(WebConfig, api_config(web))
    with pytest.raises(ValueError, match="SERPER_API_KEY"):
        build_web(config, env={"SERPAPI_API_KEY": "x"})


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        # a typo in a key name is an error, not a silent default
        ({"text_engin": "serper"}, r"unknown config key\(s\) text_engin"),
        # a value of the wrong type
        ({"pages": "five"}, "pages: expected int, got 'five'"),
        # only known engines
        ({"text_engine": "bing"}, "text_engine"),
        # an uploader needs somewhere to upload to
        ({"uploader": "http_post"}, "upload_url"),
    ],
)
def test_bad_configs_are_refused(overrides: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_search_config({"backend": "web", **overrides})


def test_serper_key_is_sent_as_header_only(fake: tuple[FakeWeb, World]) -> None:
    web, world = fake
    fill(world, 1, "q")
    text_search(web).search("q", 1)
    request = web.hits("/serper/search")[0]
    assert request.headers["x-api-key"] == SERPER_KEY
    assert SERPER_KEY not in request.body.decode() and not request.query


def test_pages_are_read_and_summarised_concurrently(fake: tuple[FakeWeb, World]) -> None:
    web, world = fake
    fill(world, 5, "q")
    read = jina(world)
    web.route("/jina/", lambda r: dataclasses.replace(read(r), delay_s=0.3))
    text = text_search(web, concurrency=5)
    started = time.monotonic()
    assert len(text.search("q", 5)) == 5
    # five 0.3-s page reads one after another would take 1.5 s
    assert time.monotonic() - started < 1.0


def test_huge_page_from_jina_is_cut_before_cache_and_llm(fake: tuple[FakeWeb, World]) -> None:
    web, world = fake
    world.results["q"] = ["huge"]
    world.pages["huge"] = "x" * 3_000_000
    cache = MemoryCache()
    text_search(web, cache=cache).search("q", 5)
    page = next(v for (layer, _), v in cache.data.items() if layer == "page")
    assert len(json.loads(page)["text"]) == 30_000
    prompt = web.hits("/v1/chat/completions")[0].json()["messages"][-1]["content"]
    assert prompt.count("x") <= 30_000 + 50


def test_call_and_cost_counters(fake: tuple[FakeWeb, World]) -> None:
    web, world = fake
    fill(world, 5, "q")
    text = text_search(web, serper_cost_usd=0.002, llm_cost_per_mtok_usd=10.0)
    text.search("q", 5)
    web.queue("/serper/search", Reply(401, {}))  # a failed call is counted, and not billed
    with pytest.raises(SearchError):
        text.search("q2", 5)
    stats = text.stats()
    assert stats["serper"]["calls"] == 2 and stats["serper"]["failures"] == 1
    assert stats["serper"]["cost_usd"] == pytest.approx(0.002)
    assert stats["jina"]["calls"] == 5
    # five summaries of 120 tokens each (the fake's usage) at $10 per million tokens
    assert stats["llm"]["tokens"] == 600
    assert stats["llm"]["cost_usd"] == pytest.approx(600 * 10.0 / 1e6)
