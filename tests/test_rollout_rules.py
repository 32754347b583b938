"""The per-trajectory rules both engines call (mmsr.rollout.rules), table-driven."""

from __future__ import annotations

import pytest

from mmsr.rollout import EndReason, RolloutLimits, end_reason, fits, search_tool, turn_action
from mmsr.types import Action, Answer, ImageSearch, Invalid, TextSearch

LIMITS = RolloutLimits()  # 3 turns, 1 image search, 2 text searches


@pytest.mark.parametrize(
    ("action", "truncated", "n_turns", "images", "texts", "expected"),
    [
        # an answer ends the rollout, whatever the turn
        (Answer("x"), False, 1, 0, 0, EndReason.ANSWERED),
        (Answer("x"), False, 3, 1, 2, EndReason.ANSWERED),
        # an invalid turn: invalid, or truncated when it was cut at the token limit
        (Invalid("no action"), False, 1, 0, 0, EndReason.INVALID_ACTION),
        (Invalid("no action"), True, 1, 0, 0, EndReason.TRUNCATED),
        # a search whose turn was cut never closed
        (ImageSearch(), True, 1, 0, 0, EndReason.TRUNCATED),
        # the first image search and a text search in turn 2 run
        (ImageSearch(), False, 1, 0, 0, None),
        (TextSearch("q"), False, 2, 1, 0, None),
        # a search in the last allowed turn ends the rollout, even within the search limits
        (TextSearch("q"), False, 3, 0, 0, EndReason.SEARCH_IN_LAST_TURN),
        # a second image search, a third text search: past the limit
        (ImageSearch(), False, 2, 1, 0, EndReason.SEARCH_LIMIT),
        (TextSearch("q"), False, 2, 0, 2, EndReason.SEARCH_LIMIT),
    ],
)
def test_end_reason(
    action: Action,
    truncated: bool,
    n_turns: int,
    images: int,
    texts: int,
    expected: EndReason | None,
) -> None:
    got = end_reason(
        action,
        truncated=truncated,
        n_turns=n_turns,
        image_searches=images,
        text_searches=texts,
        limits=LIMITS,
    )
    assert got is expected


def test_more_turns_allow_a_later_search() -> None:
    got = end_reason(
        TextSearch("q"),
        truncated=False,
        n_turns=3,
        image_searches=0,
        text_searches=0,
        limits=RolloutLimits(max_turns=5),
    )
    assert got is None


def test_turn_action_and_tool() -> None:
    assert turn_action("<reason>r</reason><text_search> q </text_search>") == TextSearch("q")
    assert search_tool(turn_action("<reason>r</reason><search><img></search>")) == "image"
    assert search_tool(TextSearch("q")) == "text"
    assert search_tool(Answer("x")) is None
    # a vision id among the sampled ids makes any turn invalid
    vision = turn_action("<reason>r</reason><answer>x</answer>", [1, 99], frozenset({99}))
    assert isinstance(vision, Invalid)


@pytest.mark.parametrize(
    ("used", "added", "budget", "expected"),
    [
        (0, 0, 1, True),  # room for one generated token
        (0, 0, 0, False),
        (10, 5, 16, True),
        (10, 6, 16, False),  # would leave no room to generate
    ],
)
def test_fits(used: int, added: int, budget: int, expected: bool) -> None:
    assert fits(used, added, budget) is expected
