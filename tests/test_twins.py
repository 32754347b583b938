"""Code that used to exist twice now exists once, and gives what each copy gave.

The image digest (search cache keys and the web image search), the learning-rate schedule
(GRPO, SFT, vision pretraining), secret redaction (web search logs, saved eval configs) and the
corpus page (written by the world, read by the local index)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from mmsr.search import imagecodec
from mmsr.search.base import SearchError
from mmsr.search.cache import CachedImageSearch, SearchCache, entry_key
from mmsr.search.cache_stores import MemoryStore
from mmsr.train.grpo_config import load_grpo_config
from mmsr.train.schedule import lr_factor, lr_multiplier, sigmoid_decay
from mmsr.types import ImageHit

# ---------------------------------------------------------------------------- image digest


def _pictures() -> dict[str, Any]:
    """The forms of one query image the cache and the codec meet."""
    rgb = Image.new("RGB", (7, 5), (200, 30, 10))
    rgb.putpixel((3, 2), (1, 2, 3))
    png = imagecodec.encode_image(rgb, "PNG")
    return {
        "RGB": rgb,
        "RGBA": rgb.convert("RGBA"),
        "L": rgb.convert("L"),
        "P": rgb.convert("P"),
        "lazy file": Image.open(io.BytesIO(png)),  # opened, pixels not yet decoded
        "decoded bytes": imagecodec.decode_image(png),
        "base64": imagecodec.from_base64(imagecodec.to_base64(rgb)),
    }


class _NoHits:
    def search(self, image: Any, k: int) -> list[ImageHit]:
        return []


class _KeyRecorder:
    """A ``LayerCache`` that remembers the keys it was asked for."""

    def __init__(self) -> None:
        self.keys: list[tuple[str, str]] = []

    def get_or_compute(self, layer: str, key: str, compute: Any) -> Any:
        self.keys.append((layer, key))
        return []


@pytest.mark.parametrize("form", sorted(_pictures()))
def test_the_cache_keys_an_image_by_the_codecs_digest(form: str) -> None:
    image = _pictures()[form]
    digest = imagecodec.image_digest(image)
    store = MemoryStore()
    CachedImageSearch(_NoHits(), SearchCache(store), namespace="ns").search(image, 3)
    assert store.get(entry_key("image", json.dumps(["ns", digest, 3]))) is not None
    assert len(store) == 1


@pytest.mark.parametrize("form", sorted(_pictures()))
def test_the_web_image_search_keys_an_image_by_the_codecs_digest(form: str) -> None:
    from mmsr.search.web.image import NoUploader, WebImageSearch

    image = _pictures()[form]
    recorder = _KeyRecorder()
    lens: Any = None  # never reached: the recorder answers every key
    WebImageSearch(lens, uploader=NoUploader(), thumbnail_client=None, cache=recorder).search(
        image, 3
    )
    assert recorder.keys == [("image", "pixels:" + imagecodec.image_digest(image))]


def test_the_digest_is_the_one_the_cache_was_recorded_with() -> None:
    # recorded caches hold keys made of this exact form: changing it empties every recording
    image = Image.new("RGB", (2, 1), (1, 2, 3))
    expected = hashlib.sha256(b"RGB:2x1:" + bytes([1, 2, 3, 1, 2, 3])).hexdigest()
    assert imagecodec.image_digest(image) == expected


def test_equal_pixels_give_equal_digests_and_any_difference_another() -> None:
    pictures = _pictures()
    same = {imagecodec.image_digest(pictures[f]) for f in ("RGB", "lazy file", "base64")}
    assert len(same) == 1  # a file's encoding is not part of the digest
    modes = {imagecodec.image_digest(pictures[f]) for f in ("RGB", "RGBA", "L", "P")}
    assert len(modes) == 4  # the mode is
    moved = pictures["RGB"].copy()
    moved.putpixel((0, 0), (200, 30, 11))
    assert imagecodec.image_digest(moved) not in same


@pytest.mark.parametrize("thing", ["https://example.org/a.png", b"\x89PNG", None])
def test_a_non_image_is_refused_by_both(thing: Any) -> None:
    with pytest.raises(ValueError, match="not a readable image"):
        imagecodec.image_digest(thing)
    cached = CachedImageSearch(_NoHits(), SearchCache(MemoryStore()), namespace="ns")
    with pytest.raises(SearchError, match="not a readable image"):
        cached.search(thing, 3)


def test_a_truncated_file_is_refused_by_both() -> None:
    png = imagecodec.encode_image(Image.effect_noise((64, 64), 50).convert("RGB"), "PNG")
    broken = Image.open(io.BytesIO(png[: len(png) // 2]))
    with pytest.raises(ValueError, match="not a readable image"):
        imagecodec.image_digest(broken)
    broken = Image.open(io.BytesIO(png[: len(png) // 2]))
    cached = CachedImageSearch(_NoHits(), SearchCache(MemoryStore()), namespace="ns")
    with pytest.raises(SearchError, match="not a readable image"):
        cached.search(broken, 3)


# ---------------------------------------------------------------------------- LR schedule
# The three formulas as each trainer had them, kept here as the reference.


def _old_grpo(k: int, *, warmup: int, schedule: str, low: float, mid: int, total: int) -> float:
    step = k + 1
    if warmup and step <= warmup:
        return step / warmup
    if schedule == "constant":
        return 1.0
    if schedule == "sigmoid":
        return sigmoid_decay(k, mid, low)
    span = max(total - warmup - 1, 1)
    progress = min((step - warmup - 1) / span, 1.0)
    return low + (1 - low) * 0.5 * (1 + math.cos(math.pi * progress))


def _old_vision(step: int, progress: float, *, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _old_sft(step: int, progress: float, *, warmup: int, low: float) -> float:
    warm = min(1.0, (step + 1) / max(1, warmup))
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return warm * (low + (1.0 - low) * cosine)


def _progresses(step: int, budget: int) -> list[float]:
    """Budget shares a trainer meets at ``step``: by steps, by a clock ahead or behind, past
    the end (a timed budget overshoots) and exactly at the edges."""
    return [step / budget, 0.37 * step / budget, 1.9 * step / budget, 0.0, 1.0, 1.0 + 1e-9]


WARMUPS = [0, 1, 2, 3, 5, 10, 20, 45]
FLOORS = [0.0, 0.01, 0.05, 0.1, 1 / 3, 0.5, 0.9, 1.0]


@pytest.mark.parametrize("schedule", ["constant", "cosine", "sigmoid"])
def test_grpo_factors_are_the_old_ones_at_every_step(schedule: str) -> None:
    base = load_grpo_config("tiny-cpu").optim
    compared = 0
    for warmup in WARMUPS:
        for low in FLOORS:
            for mid in [1, 2, 10, 45, 60]:
                for total in [1, 2, 3, 4, 10, 50, 200]:
                    optim = dataclasses.replace(
                        base,
                        schedule=schedule,
                        warmup_steps=warmup,
                        min_lr_ratio=low,
                        sigmoid_mid_step=mid,
                    )
                    factor = lr_factor(optim, total)
                    for k in range(total + 5):  # and past the end of the run
                        old = _old_grpo(
                            k, warmup=warmup, schedule=schedule, low=low, mid=mid, total=total
                        )
                        assert factor(k) == old, (k, warmup, low, mid, total)
                        compared += 1
    assert compared > 10_000


def test_the_grpo_presets_keep_their_factors() -> None:
    for preset in ["tiny-cpu", "qwen2.5-vl-7b-1gpu"]:
        cfg = load_grpo_config(preset)
        o, total = cfg.optim, cfg.run.steps
        factor = lr_factor(o, total)
        for k in range(total + 3):
            old = _old_grpo(
                k,
                warmup=o.warmup_steps,
                schedule=o.schedule,
                low=o.min_lr_ratio,
                mid=o.sigmoid_mid_step,
                total=total,
            )
            assert factor(k) == old


def test_vision_factors_are_the_old_ones_at_every_step() -> None:
    for warmup in WARMUPS:
        for budget in [1, 3, 20, 100, 500]:
            for step in range(budget + 25):
                for progress in _progresses(step, budget):
                    # as mmsr.train.vision calls it
                    new = lr_multiplier(step, progress, warmup_steps=warmup)
                    assert new == _old_vision(step, progress, warmup=warmup)


def test_sft_factors_are_the_old_ones_at_every_step() -> None:
    for warmup in [*WARMUPS, -1]:
        for low in FLOORS:
            for budget in [1, 3, 20, 100]:
                for step in range(budget + 25):
                    for progress in _progresses(step, budget):
                        # as mmsr.train.sft calls it
                        new = lr_multiplier(
                            step,
                            progress,
                            warmup_steps=warmup,
                            min_ratio=low,
                            warmup_scales_decay=True,
                        )
                        assert new == _old_sft(step, progress, warmup=warmup, low=low)


def test_the_warm_up_edges_by_hand() -> None:
    # four warm-up steps: 1/4 … 4/4, then the decay; SFT also decays during the ramp
    assert [lr_multiplier(k, 0.0, warmup_steps=4) for k in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert lr_multiplier(3, 0.5, warmup_steps=4) == 1.0  # the last ramp step ignores progress
    assert lr_multiplier(4, 0.5, warmup_steps=4) == pytest.approx(0.5)
    sft = lr_multiplier(1, 0.5, warmup_steps=4, min_ratio=0.2, warmup_scales_decay=True)
    assert sft == pytest.approx(0.5 * 0.6)
    assert lr_multiplier(7, 3.0, warmup_steps=0, min_ratio=0.2) == pytest.approx(0.2)


# ---------------------------------------------------------------------------- redaction
KEY = "sk-twin-3f9c2a71"  # an API key as the web backends read it from the environment


@pytest.fixture()
def registered_key(monkeypatch: pytest.MonkeyPatch) -> str:
    """``KEY`` read the way the web search reads its keys (registered for this test only)."""
    import mmsr.redact
    from mmsr.search.transport import secret_from_env

    monkeypatch.setattr(mmsr.redact, "_SECRETS", set())
    secret = secret_from_env({"SERPAPI_KEY": KEY}, "SERPAPI_KEY")
    assert secret is not None and secret.reveal() == KEY
    return KEY


def _eval_settings(policy: str, search: dict[str, Any]) -> dict[str, Any]:
    """What ``mmsr eval`` saves of its settings (``OUT/config.json``)."""
    from mmsr.eval.config import EvalRunConfig

    run = EvalRunConfig(policy=policy, method="direct", data=Path("q.jsonl"), out=Path("out"))
    return dataclasses.asdict(run.saved(search))


def _search_log(caplog: pytest.LogCaptureFixture, logger: str, text: str) -> str:
    """What a search log line saying ``text`` leaves in the log."""
    import logging

    import mmsr.search.transport  # noqa: F401  (puts the filter on the http libraries' loggers)

    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger=logger):
        logging.getLogger(logger).debug("%s", text)
    return caplog.records[-1].getMessage()


@pytest.mark.parametrize(
    "leak",
    [
        f"https://serpapi.com/search?engine=google&api_key={KEY}&q=cat",  # a key in a query
        "https://alice:hunter2@llm.example/v1",  # a password in a url
        f"error: invalid key {KEY}",  # a key echoed back by an API
    ],
)
def test_search_logs_and_saved_eval_settings_hide_the_same_secrets(
    leak: str, registered_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    from mmsr.search.web.engines import _serpapi_body

    saved = _eval_settings(f"openai:{leak}#m", {"backend": "web", "base_url": leak})
    with pytest.raises(SearchError):  # an API's error field goes to the debug log
        caplog.set_level("DEBUG", logger="mmsr.search.web.engines")
        _serpapi_body({"error": leak}, service="serpapi", tool="text")
    logged = [r.getMessage() for r in caplog.records if r.name == "mmsr.search.web.engines"]
    shown = [
        saved["policy"],
        saved["search"]["base_url"],
        _search_log(caplog, "httpx", leak),
        _search_log(caplog, "httpcore", leak),
        *logged,
    ]
    assert len(shown) == 5
    for text in shown:
        assert KEY not in text and "hunter2" not in text, text
        assert "***" in text, text


def test_settings_named_like_secrets_are_hidden_and_the_rest_kept(registered_key: str) -> None:
    saved = _eval_settings("scripted:top-title", {"backend": "web", "api_key": "k1", "pages": 5})
    assert saved["search"] == {"backend": "web", "api_key": "***", "pages": 5}
    assert saved["policy"] == "scripted:top-title"


def test_one_redaction_serves_every_caller() -> None:
    import mmsr.cli
    import mmsr.eval.config
    import mmsr.eval.run
    import mmsr.redact
    import mmsr.search.web.engines

    assert mmsr.eval.config.redact is mmsr.redact.redact is mmsr.eval.run.redact
    assert mmsr.search.web.engines.redact_text is mmsr.redact.redact_text is mmsr.cli.redact_text


# ---------------------------------------------------------------------------- corpus page


def test_the_world_writes_the_page_the_index_reads(tmp_path: Path) -> None:
    from mmsr.search.local.corpus import Page, read_corpus
    from mmsr.world.write import write_corpus

    pages = [
        Page(
            "cat",
            "Cat",
            "https://w/Cat",
            "A cat.",
            Path("images/cat.png"),
            (Path("images/cat.noto.png"),),
        ),
        Page("paris", "Paris", "https://w/Paris", "Capital of France."),
    ]
    (tmp_path / "images").mkdir()
    images = {"images/cat.png": b"png-1", "images/cat.noto.png": b"png-2"}
    write_corpus(tmp_path, pages, images)
    rows = [json.loads(line) for line in (tmp_path / "pages.jsonl").read_text().splitlines()]
    assert rows[0] == {
        "id": "cat",
        "title": "Cat",
        "url": "https://w/Cat",
        "text": "A cat.",
        "image": "images/cat.png",
        "more_images": ["images/cat.noto.png"],
    }
    assert rows[1] == {
        "id": "paris",
        "title": "Paris",
        "url": "https://w/Paris",
        "text": "Capital of France.",
    }
    read = read_corpus(tmp_path).pages
    root = tmp_path.resolve()
    # the same record back, its pictures now absolute paths inside the corpus folder
    assert read == (
        dataclasses.replace(
            pages[0], image=root / "images/cat.png", more_images=(root / "images/cat.noto.png",)
        ),
        pages[1],
    )


def test_a_fetched_web_page_is_not_a_corpus_page() -> None:
    from mmsr.search.local.corpus import Page
    from mmsr.search.web import pages
    from mmsr.world import write

    assert write.Page is Page  # the world writes the corpus page itself, not a copy of it
    assert not hasattr(pages, "Page")  # a fetched page has its own name
    assert {f.name for f in dataclasses.fields(pages.FetchedPage)} == {"url", "title", "text"}
