"""The ``web`` search backends: the paper's chain over paid web APIs.

``build_web(config)`` takes a ``WebConfig`` (the registry builds it from a search config's
keys), reads the API keys from the environment and returns the image and/or text backend.
Keys live only in memory (as ``Secret``); they are never logged, cached, put into errors or
returned.

Example config (JSON): ``{"backend": "web", "text_engine": "serper", "reader": "jina",
"llm_base_url": "http://127.0.0.1:8000/v1", "llm_model": "Qwen2.5-7B-Instruct"}``, or the
paper's chain: ``{"backend": "web", "preset": "paper"}`` (``PRESETS`` in ``config.py``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from mmsr.search.base import LayerCache, SearchBackends
from mmsr.search.transport import (
    ApiCaller,
    RateLimiter,
    RetryPolicy,
    make_client,
    secret_from_env,
)
from mmsr.search.web.config import WebConfig
from mmsr.search.web.engines import LinkSearch, SerpApiGoogle, SerpApiLens, Serper
from mmsr.search.web.guard import AddressPolicy, guarded_client
from mmsr.search.web.image import HttpPostUploader, ImageUploader, NoUploader, WebImageSearch
from mmsr.search.web.pages import JinaReader, LocalReader, PageReader
from mmsr.search.web.summarize import DEFAULT_TEMPLATE, ChatSummarizer, load_template
from mmsr.search.web.text import WebTextSearch

__all__ = [
    "ImageUploader",
    "WebConfig",
    "WebImageSearch",
    "WebTextSearch",
    "build_web",
]


class _Callers:
    """Creates one rate-limited ``ApiCaller`` per service and remembers them for stats."""

    def __init__(self, config: WebConfig) -> None:
        self.config = config
        self.retry = RetryPolicy(
            attempts=config.retry_attempts,
            base_delay_s=config.retry_base_delay_s,
            max_delay_s=config.retry_max_delay_s,
            max_retry_after_s=config.max_retry_after_s,
        )
        self.client = make_client(timeout_s=config.timeout_s, trust_env=config.trust_env)
        self.made: dict[str, ApiCaller] = {}
        self.extra: list[LocalReader] = []

    def get(self, service: str, *, cost: float = 0.0, tool: str = "text") -> ApiCaller:
        if service not in self.made:
            limiter = RateLimiter(self.config.rate_per_s, burst=self.config.concurrency)
            self.made[service] = ApiCaller(
                service,
                self.client,
                retry=self.retry,
                limiter=limiter,
                cost_per_call_usd=cost,
                tool=tool,
            )
        return self.made[service]

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {name: c.stats.snapshot() for name, c in self.made.items()}
        for reader in self.extra:
            out[reader.service] = reader.stats.snapshot()
        return out


def _text_backend(
    config: WebConfig, env: Mapping[str, str], callers: _Callers, cache: LayerCache | None
) -> WebTextSearch:
    engine: LinkSearch
    if config.text_engine == "serper":
        key = secret_from_env(env, config.serper_key_env)
        assert key is not None
        engine = Serper(callers.get("serper", cost=config.serper_cost_usd), config.serper_url, key)
    else:
        key = secret_from_env(env, config.serpapi_key_env)
        assert key is not None
        caller = callers.get("serpapi", cost=config.serpapi_cost_usd)
        engine = SerpApiGoogle(caller, config.serpapi_url, key)
    reader: PageReader
    if config.reader == "jina":
        jina_key = secret_from_env(env, config.jina_key_env, required=False)
        reader = JinaReader(callers.get("jina"), config.jina_url, jina_key)
    else:
        policy = AddressPolicy(allow_loopback=config.allow_loopback)
        local = LocalReader(
            guarded_client(policy, timeout_s=config.timeout_s), max_bytes=config.max_page_bytes
        )
        callers.extra.append(local)
        reader = local
    summarizer = ChatSummarizer(
        callers.get("llm"),
        base_url=config.llm_base_url,
        model=config.llm_model,
        key=secret_from_env(env, config.llm_key_env, required=False),
        page_chars=config.page_chars,
        sentences=config.summary_sentences,
        max_tokens=config.summary_max_tokens,
        cost_per_mtok_usd=config.llm_cost_per_mtok_usd,
        template=(
            load_template(config.summary_prompt_file)
            if config.summary_prompt_file
            else DEFAULT_TEMPLATE
        ),
        thinking=config.llm_thinking,
    )
    return WebTextSearch(
        engine,
        reader,
        summarizer,
        engine_name=config.text_engine,
        pages=config.pages,
        candidate_urls=config.candidate_urls,
        concurrency=config.concurrency,
        page_chars=config.page_chars,
        cache=cache,
        stats=callers.stats,
    )


def _image_backend(
    config: WebConfig,
    env: Mapping[str, str],
    callers: _Callers,
    cache: LayerCache | None,
    uploader: ImageUploader | None,
) -> WebImageSearch:
    key = secret_from_env(env, config.serpapi_key_env)
    assert key is not None
    lens = SerpApiLens(
        callers.get("serpapi_lens", cost=config.serpapi_cost_usd, tool="image"),
        config.serpapi_url,
        key,
    )
    if uploader is None:
        uploader = NoUploader()
    if config.uploader == "http_post":
        token = secret_from_env(env, config.upload_token_env, required=False)
        uploader = HttpPostUploader(callers.get("upload", tool="image"), config.upload_url, token)
    thumbs = None
    if config.thumbnails:
        policy = AddressPolicy(allow_loopback=config.allow_loopback)
        thumbs = guarded_client(policy, timeout_s=config.timeout_s)
    return WebImageSearch(
        lens, uploader=uploader, thumbnail_client=thumbs, cache=cache, stats=callers.stats
    )


def build_web(
    config: WebConfig,
    *,
    cache: LayerCache | None = None,
    env: Mapping[str, str] | None = None,
    uploader: ImageUploader | None = None,
) -> SearchBackends:
    """The web backends for ``config``; keys come from ``env`` (default: ``os.environ``).

    ``uploader`` plugs in your own way of publishing query images (e.g. a bucket); it takes
    the place of the config's ``uploader`` when that is "none".
    """
    env = os.environ if env is None else env
    callers = _Callers(config)
    text = None if config.text_engine == "none" else _text_backend(config, env, callers, cache)
    image = (
        None
        if config.image_engine == "none"
        else _image_backend(config, env, callers, cache, uploader)
    )
    return SearchBackends(image=image, text=text)
