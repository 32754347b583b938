"""The search configs as frozen dataclasses: each backend's and the cache's keys, types, defaults.

They are built by ``mmsr.config.build`` through ``parse_search_config`` (what ``build_search``,
the CLIs and the service read), so these tests build nothing and open no file.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import pytest

from mmsr.config import ConfigError
from mmsr.search.cache import CacheConfig, CacheMode
from mmsr.search.fvqa import FvqaConfig
from mmsr.search.local import LocalConfig
from mmsr.search.registry import BACKENDS, load_search_config, parse_search_config
from mmsr.search.service.client import HttpConfig
from mmsr.search.web.config import WebConfig

# The smallest config of each backend, its config class, and defaults pinned by value.
DEFAULTS: list[tuple[dict[str, Any], type[Any], dict[str, Any]]] = [
    # local: an index; summaries of 500 characters; the image tool on
    (
        {"backend": "local", "index": "idx"},
        LocalConfig,
        {"index": "idx", "summary_chars": 500, "images": True, "color_weight": 2.0},
    ),
    # fvqa: only the folder of converted results
    ({"backend": "fvqa", "path": "fvqa"}, FvqaConfig, {"path": "fvqa"}),
    # web: the paper's chain (Serper, Lens, Jina, top-5 of 10 urls, 30,000 characters)
    (
        {"backend": "web"},
        WebConfig,
        {
            "text_engine": "serper",
            "image_engine": "serpapi_lens",
            "reader": "jina",
            "pages": 5,
            "candidate_urls": 10,
            "page_chars": 30_000,
            "serper_key_env": "SERPER_API_KEY",
            "uploader": "none",
            "trust_env": True,
            "allow_loopback": False,
        },
    ),
    # http: a url; the token from MMSR_SEARCH_TOKEN; both tools; no proxies
    (
        {"backend": "http", "url": "http://10.0.0.5:8000"},
        HttpConfig,
        {
            "url": "http://10.0.0.5:8000",
            "token_env": "MMSR_SEARCH_TOKEN",
            "timeout_s": 120.0,
            "retry_attempts": 4,
            "retry_base_delay_s": 0.5,
            "tools": ("image", "text"),
            "trust_env": False,
        },
    ),
]


def test_every_registered_backend_has_a_defaults_case() -> None:
    assert sorted(config["backend"] for config, _, _ in DEFAULTS) == sorted(BACKENDS)


@pytest.mark.parametrize(("config", "cls", "expected"), DEFAULTS)
def test_backend_defaults(config: dict[str, Any], cls: type[Any], expected: dict[str, Any]) -> None:
    parsed = parse_search_config(config)
    assert parsed.backend == config["backend"]
    assert type(parsed.options) is cls
    values = dataclasses.asdict(parsed.options)
    assert {key: values[key] for key in expected} == expected
    assert parsed.cache is None  # no cache section: no cache


def test_cache_defaults() -> None:
    parsed = parse_search_config({"backend": "local", "index": "i", "cache": {"path": "c.db"}})
    assert parsed.cache == CacheConfig(
        mode="read-write",
        store="sqlite",
        path="c.db",
        url="redis://127.0.0.1:6379/0",
        prefix="mmsr:search:",
    )


def test_cache_modes_are_the_cache_modes() -> None:
    hint = typing.get_type_hints(CacheConfig)["mode"]
    assert typing.get_args(hint) == tuple(mode.value for mode in CacheMode)


LOCAL = {"backend": "local", "index": "i"}

# A config that does not fit, and what its ConfigError must say (it names the key).
BAD: list[tuple[dict[str, Any], str]] = [
    # local: a key it does not know, listing the ones it does
    (
        {**LOCAL, "colour": "red"},
        "local search backend: unknown config key(s) colour; known: index",
    ),
    # local: a number where a count belongs
    ({**LOCAL, "summary_chars": "many"}, "local search backend: summary_chars: expected int"),
    # local: "false" in a string is not a bool (it used to read as true)
    ({**LOCAL, "images": "false"}, "images: expected bool, got 'false'"),
    # local: no index
    ({"backend": "local"}, "local search backend: missing config key(s) index"),
    # fvqa: a key it does not know
    ({"backend": "fvqa", "path": "p", "split": "val"}, "fvqa search backend: unknown config key"),
    # fvqa: a folder is a string
    ({"backend": "fvqa", "path": 3}, "fvqa search backend: path: expected str, got 3"),
    # fvqa: no folder
    ({"backend": "fvqa"}, "fvqa search backend: missing config key(s) path"),
    # web: a typo in a key name is an error, not a silent default
    (
        {"backend": "web", "text_engin": "serper"},
        "web search backend: unknown config key(s) text_engin",
    ),
    # web: a bool is not a count
    ({"backend": "web", "pages": True}, "web search backend: pages: expected int, got True"),
    # web: only known engines (checked by WebConfig itself)
    ({"backend": "web", "text_engine": "bing"}, "text_engine must be one of"),
    # web: an uploader needs somewhere to upload to
    ({"backend": "web", "uploader": "http_post"}, "uploader http_post needs upload_url"),
    # http: a key it does not know
    (
        {"backend": "http", "url": "u", "timeout": 3},
        "http search backend: unknown config key(s) timeout",
    ),
    # http: tools are a list
    (
        {"backend": "http", "url": "u", "tools": "text"},
        "http search backend: tools: expected a list",
    ),
    # http: no url
    ({"backend": "http"}, "http search backend: missing config key(s) url"),
    # cache: a key it does not know
    ({**LOCAL, "cache": {"path": "x", "ttl": 3}}, "search cache: unknown config key(s) ttl"),
    # cache: a mode that does not exist
    ({**LOCAL, "cache": {"mode": "sometimes"}}, "search cache: mode: 'sometimes' is not one of"),
    # cache: a store that does not exist
    ({**LOCAL, "cache": {"store": "memcached"}}, "search cache: store: 'memcached' is not one of"),
    # cache: the sqlite store needs a file
    ({**LOCAL, "cache": {"store": "sqlite"}}, "search cache: the sqlite store needs 'path'"),
    # cache: a path is a string
    ({**LOCAL, "cache": {"path": 7}}, "search cache: path: expected str, got 7"),
]


@pytest.mark.parametrize(("config", "message"), BAD)
def test_bad_configs_name_the_key(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_search_config(config)
    assert message in str(info.value)


def test_off_cache_needs_no_path() -> None:
    parsed = parse_search_config({**LOCAL, "cache": {"mode": "off"}})
    assert parsed.cache is not None and parsed.cache.mode == "off" and parsed.cache.path is None


def test_toml_file_values_are_coerced(tmp_path: Path) -> None:
    # TOML writes whole seconds as integers and lists as arrays; the config holds floats, tuples
    path = tmp_path / "search.toml"
    path.write_text(
        'backend = "http"\nurl = "http://h:8000"\ntimeout_s = 30\ntools = ["text"]\n'
        '[cache]\nmode = "replay"\npath = "frozen.sqlite"\n',
        encoding="utf-8",
    )
    parsed = parse_search_config(load_search_config(path))
    assert parsed.options == HttpConfig(url="http://h:8000", timeout_s=30.0, tools=("text",))
    assert isinstance(parsed.options.timeout_s, float)
    assert parsed.cache == CacheConfig(mode="replay", path="frozen.sqlite")


def test_configs_are_frozen() -> None:
    options = parse_search_config(LOCAL).options
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.index = "other"
