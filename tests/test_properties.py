"""Property-based fuzzing: parsing, format checks, rendering and rewards never raise."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from mmsr.protocol import (
    IMAGE_PLACEHOLDER,
    INFORMATION_CLOSE,
    default_prompt_set,
    neutralize,
    parse_action,
    render_text_results,
    well_formed_kind,
)
from mmsr.rewards import exact_match, score_trajectory, substring_match, token_f1
from mmsr.types import ActionKind, Answer, TextHit

# Text biased towards protocol fragments, so the fuzzer reaches the interesting branches.
FRAGMENTS = st.sampled_from(
    [
        "<reason>", "</reason>", "<answer>", "</answer>", "<search>", "<img>", "</search>",
        "<search><img></search>", "<text_search>", "</text_search>", "<information>",
        "</information>", "<image>", "<|im_end|>", "<", ">", " ", "\n", "Paris", "é", "\x00",
    ]
)  # fmt: skip
TEXT = st.lists(st.one_of(FRAGMENTS, st.text(max_size=8)), max_size=30).map("".join)


@settings(max_examples=400, deadline=None)
@given(TEXT)
def test_parse_and_format_never_raise(text: str) -> None:
    action = parse_action(text)
    kind = well_formed_kind(text)
    # a well-formed turn always parses to the same kind of action
    if kind is not None and action.kind is not ActionKind.INVALID:
        assert action.kind is kind
    if kind is ActionKind.ANSWER:
        assert isinstance(action, Answer)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(TEXT, st.none()), max_size=5), st.lists(st.one_of(TEXT, st.none())))
def test_reward_never_raises_and_stays_in_range(turns: list[str], golds: list[str]) -> None:
    for mode in ("em", "subem", "f1"):
        r = score_trajectory(turns, golds, mode=mode)  # type: ignore[arg-type]
        assert 0.0 <= r.score <= 1.0
        assert r.format_score in (0.0, 1.0)


@settings(max_examples=300, deadline=None)
@given(TEXT, st.lists(TEXT, max_size=3))
def test_matchers_never_raise(pred: str, golds: list[str]) -> None:
    em, sub, f1 = exact_match(pred, golds), substring_match(pred, golds), token_f1(pred, golds)
    assert 0.0 <= f1 <= 1.0
    # an exact match of a non-empty answer is also a substring match and a perfect F1
    if em and pred.strip() and any(g.strip() for g in golds) and f1 > 0:
        assert sub


@settings(max_examples=300, deadline=None)
@given(TEXT, TEXT, TEXT)
def test_rendered_results_keep_one_information_block(
    title: str, summary: str, question: str
) -> None:
    turn = render_text_results([TextHit(title, title, summary)], question, default_prompt_set())
    assert turn.text.count(INFORMATION_CLOSE) == 1
    assert turn.text.count(IMAGE_PLACEHOLDER) == 0
    # every "<" left is a comparison: followed by a digit or "=" (after optional spaces)
    assert not re.search(r"<(?!\s*[\d=])", neutralize(title + summary))
