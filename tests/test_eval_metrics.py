"""Evaluation metrics on hand-made records with hand-computed expectations."""

from __future__ import annotations

import pytest

from mmsr.eval.metrics import (
    EvalRecord,
    allowed_search_calls,
    compute_metrics,
    search_decision,
    summarize,
)
from mmsr.rollout.engine import RolloutLimits


def rec(answer: str | None, image: int = 0, text: int = 0, **kw: object) -> EvalRecord:
    return EvalRecord(
        id=str(kw.pop("id", answer)),
        answer=answer,
        golds=("Paris",),
        image_calls=image,
        text_calls=text,
        turns=1 + image + text,
        **kw,  # type: ignore[arg-type]
    )


RECORDS = [
    rec("Paris", category="search_free", need="none", tokens=10),  # right, no search
    rec(
        "Paris, France", image=1, category="search_required", need="image", tokens=30
    ),  # subem only
    rec(
        "Rome", image=1, text=1, category="search_required", need="both", tokens=50
    ),  # wrong, both tools
    rec(
        None, text=2, category="search_required", need="text", tokens=70
    ),  # no answer, two text calls
    rec(
        "Paris", text=1, category="search_free", need="none", tokens=40
    ),  # right but searched needlessly
]


def test_summary() -> None:
    s = summarize(RECORDS)
    assert s["n"] == 5
    assert s["accuracy_em"] == pytest.approx(2 / 5)
    assert s["accuracy_subem"] == pytest.approx(3 / 5)
    # F1: 1, 2/3 ("paris france" vs "paris"), 0, 0, 1
    assert s["accuracy_f1"] == pytest.approx((1 + 2 / 3 + 1) / 5)
    assert s["search_ratio"] == pytest.approx(4 / 5)  # any search
    assert s["search_call_ratio"] == pytest.approx(6 / 10)  # 6 calls of 2 allowed x 5
    assert (s["image_only_ratio"], s["text_only_ratio"], s["both_ratio"]) == pytest.approx(
        (0.2, 0.4, 0.2)
    )
    assert s["mean_turns"] == pytest.approx((1 + 2 + 3 + 3 + 2) / 5)
    assert s["mean_tokens"] == pytest.approx(40.0)
    assert "accuracy_judge" not in s


def test_search_decision_against_need_labels() -> None:
    d = search_decision(RECORDS)
    assert d is not None
    # searched on 4; of those, 3 needed it: precision 3/4; needed 3, all searched: recall 1
    assert (d["precision"], d["recall"]) == pytest.approx((0.75, 1.0))
    assert d["f1"] == pytest.approx(2 * 0.75 / 1.75)
    assert search_decision([rec("Paris")]) is None  # no labels


def test_groups_and_judge() -> None:
    judged = [
        *RECORDS[:2],
        rec("Paris", id="j", judge_correct=True),
        rec("x", id="k", judge_correct=False),
    ]
    m = compute_metrics(judged)
    assert m["overall"]["accuracy_judge"] == pytest.approx(0.5)
    assert m["overall"]["judge_coverage"] == pytest.approx(0.5)
    m = compute_metrics(RECORDS)
    assert set(m["by_category"]) == {"search_free", "search_required"}
    assert m["by_category"]["search_free"]["search_ratio"] == pytest.approx(0.5)
    assert m["by_need"]["image"]["accuracy_subem"] == 1.0
    assert "search_decision" in m


def test_empty() -> None:
    s = summarize([])
    assert s["n"] == 0 and s["search_ratio"] == 0.0 and s["accuracy_em"] == 0.0


@pytest.mark.parametrize(
    ("turns", "image", "text", "allowed"),
    [
        # the protocol's defaults: 3 turns, no search in the last, so 2 of the 1 + 2 searches
        (3, 1, 2, 2),
        # more turns: the per-tool limits bind
        (5, 1, 2, 3),
        (10, 2, 3, 5),
        # two turns: one search, then the answer
        (2, 1, 2, 1),
        # one turn: no search can run
        (1, 1, 2, 0),
        # no tools at all
        (3, 0, 0, 0),
    ],
)
def test_allowed_search_calls(turns: int, image: int, text: int, allowed: int) -> None:
    limits = RolloutLimits(max_turns=turns, max_image_searches=image, max_text_searches=text)
    assert allowed_search_calls(limits) == allowed


def test_a_rollout_making_every_allowed_call_reads_100_percent() -> None:
    # rag's fixed workflow (image search, then one text search) under the default limits
    s = summarize([rec("Paris", image=1, text=1)])
    assert s["search_call_ratio"] == pytest.approx(1.0)
    assert summarize([rec("Paris", image=1, text=1)], allowed_calls=4)["search_call_ratio"] == 0.5
