"""The paper's text chain as a named web preset: SerpAPI, Jina Reader and a Qwen3-32B
summariser with thinking off, run end to end against loopback fakes of those services; the
preset is spelt out in a saved config; a user's own summary prompt replaces ours."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from web_fakes import FakeWeb, Reply, Request, World, api_config, chat, env_keys, running

from mmsr.config import ConfigError
from mmsr.search.registry import (
    _namespace,
    build_search,
    parse_search_config,
    resolved_search_config,
    search_config_from_spec,
)
from mmsr.search.web.summarize import load_template, strip_thinking


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeWeb, World]]:
    for name, value in env_keys().items():
        monkeypatch.setenv(name, value)
    yield from running()


def _paper(web: FakeWeb, **overrides: Any) -> dict[str, Any]:
    """The paper preset with every service on the fake server (its own model name kept)."""
    urls = {k: v for k, v in api_config(web).items() if k != "llm_model"}
    return {"backend": "web", "preset": "paper", **urls, **overrides}


def _thinking_chat(seen: list[dict[str, Any]]) -> Any:
    """The fake chat API, recording each request and thinking aloud before its answer."""

    def handle(req: Request) -> Reply:
        seen.append(req.json())
        reply = chat(req)
        message = reply.body["choices"][0]["message"]
        message["content"] = "<think>Which facts matter here?</think>\n" + message["content"]
        return reply

    return handle


def test_the_paper_preset_is_spelt_out_and_its_own_keys_win() -> None:
    config = {"backend": "web", "preset": "paper", "llm_base_url": "http://gpu-7:8000/v1"}
    resolved = resolved_search_config(config)
    assert resolved["text_engine"] == "serpapi" and resolved["reader"] == "jina"
    assert resolved["llm_model"] == "Qwen/Qwen3-32B" and resolved["llm_thinking"] is False
    assert resolved["llm_base_url"] == "http://gpu-7:8000/v1"  # the config's key wins
    options = parse_search_config(config).options
    assert (options.preset, options.text_engine, options.page_chars) == ("paper", "serpapi", 30000)
    cheap = parse_search_config({"backend": "web", "preset": "cheap"}).options
    assert (cheap.text_engine, cheap.llm_model) == ("serper", "gpt-4o-mini")


def test_a_config_file_is_saved_with_the_preset_spelt_out(tmp_path: Path) -> None:
    path = tmp_path / "search.json"
    path.write_text(json.dumps({"backend": "web", "preset": "paper"}))
    saved = search_config_from_spec(str(path))
    assert saved["preset"] == "paper" and saved["llm_model"] == "Qwen/Qwen3-32B"
    assert saved["text_engine"] == "serpapi"


@pytest.mark.parametrize(
    ("config", "match"),
    [
        # a preset name that does not exist
        ({"backend": "web", "preset": "papers"}, "unknown preset 'papers'; presets: cheap, paper"),
        # a backend without presets
        ({"backend": "local", "index": "i", "preset": "paper"}, "presets: none"),
    ],
)
def test_bad_presets_are_refused(config: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_search_config(config)


def test_the_paper_chain_runs_serpapi_jina_and_qwen3(fake: tuple[FakeWeb, World]) -> None:
    web, world = fake
    seen: list[dict[str, Any]] = []
    web.route("/v1/chat/completions", _thinking_chat(seen))
    world.results["eiffel tower height"] = [f"p{i}" for i in range(6)]
    world.pages.update({f"p{i}": f"Page p{i} says 330 metres." for i in range(6)})
    text = build_search(_paper(web, image_engine="none")).text
    assert text is not None
    hits = text.search("eiffel tower height", 5, question="How tall is the Eiffel Tower?")
    assert [h.url.rsplit("/", 1)[-1] for h in hits] == ["p0", "p1", "p2", "p3", "p4"]
    assert all("<think>" not in h.summary and h.summary.startswith("Fact 1") for h in hits)
    assert len(web.hits("/serpapi/")) == 1 and web.hits("/serper/") == []
    assert len(web.hits("/jina/")) == 5
    assert {p["model"] for p in seen} == {"Qwen/Qwen3-32B"}
    assert all(p["chat_template_kwargs"] == {"enable_thinking": False} for p in seen)


def test_a_user_prompt_file_replaces_ours(fake: tuple[FakeWeb, World], tmp_path: Path) -> None:
    web, world = fake
    seen: list[dict[str, Any]] = []
    web.route("/v1/chat/completions", _thinking_chat(seen))
    world.results["q"], world.pages["p0"] = ["p0"], "Page p0 text."
    prompt = tmp_path / "summary.txt"
    prompt.write_text("MINE for {question}\nPage title: {title}\n{text}\n")
    config = _paper(web, image_engine="none", summary_prompt_file=str(prompt))
    text = build_search(config).text
    assert text is not None
    text.search("q", 1, question="Who?")
    assert seen[0]["messages"][-1]["content"].startswith("MINE for Who?\nPage title: ")
    # the cache tells prompts apart by content, not by the file's name
    before = _namespace(parse_search_config(config))
    prompt.write_text("Other words.\nPage title: {title}\n{text}\n")
    assert _namespace(parse_search_config(config)) != before


@pytest.mark.parametrize(
    ("template", "match"),
    [
        ("no page here {question}", "must use {text}"),  # the page is never given
        ("{text} {answer}", "found \\['answer', 'text'\\]"),  # a field we do not fill
        ("{text} {", "not a usable prompt template"),  # a stray brace
    ],
)
def test_bad_prompt_files_are_refused(tmp_path: Path, template: str, match: str) -> None:
    path = tmp_path / "p.txt"
    path.write_text(template)
    with pytest.raises(ValueError, match=match):
        load_template(path)


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("<think>hmm</think>\nIt is 330 m.", "It is 330 m."),  # a whole thinking block
        ("hmm, tall\n</think>\n\nIt is 330 m.", "It is 330 m."),  # the opening tag dropped
        ("It is 330 m.", "It is 330 m."),  # no thinking at all
        ("<think>only thoughts</think>", ""),  # nothing but thinking: empty
    ],
)
def test_strip_thinking(raw: str, clean: str) -> None:
    assert strip_thinking(raw) == clean
