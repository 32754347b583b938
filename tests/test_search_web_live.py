"""Live checks of the web backends against the real APIs (``pytest -m network``); each test
skips when its API keys are not in the environment. They cost a few cents."""

from __future__ import annotations

import os

import pytest

from mmsr.search.registry import build_search

pytestmark = pytest.mark.network

PUBLIC_IMAGE = (
    "https://upload.wikimedia.org/wikipedia/commons/a/a8/Tour_Eiffel_Wikimedia_Commons.jpg"
)


def _require(*names: str) -> None:
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}")


def test_live_text_chain() -> None:
    engine = "serper" if os.environ.get("SERPER_API_KEY") else "serpapi"
    _require("SERPER_API_KEY" if engine == "serper" else "SERPAPI_API_KEY", "OPENAI_API_KEY")
    text = build_search({"backend": "web", "text_engine": engine, "image_engine": "none"}).text
    assert text is not None
    hits = text.search("Eiffel Tower height", 3, question="How tall is the Eiffel Tower?")
    assert 1 <= len(hits) <= 3
    assert all(h.url.startswith("http") and h.summary for h in hits)


def test_live_lens() -> None:
    _require("SERPAPI_API_KEY")
    image = build_search({"backend": "web", "text_engine": "none"}).image
    assert image is not None
    hits = image.search(PUBLIC_IMAGE, 5)
    assert hits and all(h.url.startswith("http") for h in hits)
