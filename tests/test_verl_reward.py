"""veRL's custom reward hook (mmsr.integrations.verl.reward) against mmsr.rewards."""

from __future__ import annotations

import json

import pytest

from mmsr.integrations.verl.reward import SCORE_KEYS, compute_score, golds_of
from mmsr.rewards import score_trajectory

R = "<reason>r</reason>"
IMG, TXT = R + "<search><img></search>", R + "<text_search>q</text_search>"
GOLDS = ["Paris", "City of Light"]


@pytest.mark.parametrize(
    "turns",
    [
        [R + "<answer>Paris</answer>"],  # correct, no search: 1.0
        [IMG, R + "<answer>city of light</answer>"],  # correct via an alias after a search
        [IMG, TXT, R + "<answer>Lyon</answer>"],  # wrong but well formed: 0.1
        [IMG, IMG],  # ended at the search limit: 0
        ["<answer>Paris</answer>"],  # correct, badly formed: 0.9
        [],  # nothing generated
    ],
)
@pytest.mark.parametrize("options", [{}, {"mode": "subem", "penalty_per_search": True}])
def test_parity_with_score_trajectory(turns: list[str], options: dict[str, object]) -> None:
    info = {"mmsr_turns": turns, "mmsr_golds": GOLDS, "mmsr_end_reason": "answered"}
    got = compute_score("fvqa", "ignored", "Paris", info, **options)  # type: ignore[arg-type]
    want = score_trajectory(turns, GOLDS, **options)  # type: ignore[arg-type]
    assert tuple(got) == SCORE_KEYS
    assert got["score"] == pytest.approx(want.score)
    assert got["acc"] == want.accuracy and got["format"] == want.format_score
    assert got["search_count"] == want.search_count
    assert got["searched"] == float(want.search_count > 0)
    assert got["answered"] == float(want.answer is not None)
    assert got["end_reason"] == "answered"


def test_scores_the_assistant_turns_not_the_decoded_response() -> None:
    # the decoded response holds the tool turn, whose text may spell an answer
    solution = IMG + "<information>1. Paris</information>" + R + "<answer>Lyon</answer>"
    info = {"mmsr_turns": [IMG, R + "<answer>Lyon</answer>"], "mmsr_golds": ["Paris"]}
    assert compute_score("fvqa", solution, "Paris", info)["acc"] == 0.0


def test_without_mmsr_turns_the_response_is_one_turn() -> None:
    got = compute_score("fvqa", R + "<answer>Paris</answer>", "Paris", {})
    assert got["score"] == 1.0 and got["end_reason"] == ""


@pytest.mark.parametrize(
    ("ground_truth", "info", "expected"),
    [
        ("Paris", {}, ["Paris"]),
        (json.dumps(["Paris", "Lutetia"]), {}, ["Paris", "Lutetia"]),  # FVQA's JSON string
        (["Paris", "Lutetia"], {}, ["Paris", "Lutetia"]),
        ("Paris", {"mmsr_golds": ["Lutetia"]}, ["Lutetia"]),  # the loop's candidates win
        (None, {}, []),
        ("[not json", {}, ["[not json"]),
    ],
)
def test_golds(ground_truth: object, info: dict[str, object], expected: list[str]) -> None:
    assert golds_of(ground_truth, info) == expected
