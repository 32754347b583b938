"""The reward: answer matching, format, search penalty and the total."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from mmsr.rewards import (
    exact_match,
    normalize_answer,
    score_trajectory,
    substring_match,
    token_f1,
)

R = "<reason>r</reason>"
ANSWER = R + "<answer>{}</answer>"
IMG = R + "<search><img></search>"
TXT = R + "<text_search>query</text_search>"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Paris", "paris"),  # lower case
        ("The Eiffel Tower", "eiffel tower"),  # article dropped
        ("an apple, a pear", "apple pear"),  # articles and punctuation
        ("  many   spaces\t\n", "many spaces"),  # white space collapsed
        ("U.S.A.", "usa"),  # ASCII punctuation dropped
        ("théâtre", "théâtre"),  # non-ASCII letters kept
        ("«Paris»", "«paris»"),  # only ASCII punctuation is dropped (as in SQuAD)
        ("theatre", "theatre"),  # "the" inside a word stays
        ("", ""),  # empty
    ],
)
def test_normalize_answer(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


@pytest.mark.parametrize(
    ("pred", "golds", "em", "subem"),
    [
        ("Paris", ["Paris"], True, True),  # identical
        ("the paris.", ["Paris"], True, True),  # equal after normalisation
        ("Paris, France", ["Paris"], False, True),  # gold inside the prediction
        ("Par", ["Paris"], False, False),  # prediction inside gold is not enough
        ("Lutetia", ["Paris", "Lutetia"], True, True),  # any alias
        ("Paris", "Paris", True, True),  # a single gold string
        ("anything", [""], False, False),  # an empty gold never matches by substring
        ("", [""], True, False),  # empty equals empty for EM
        ("Paris", [], False, False),  # no golds
        ("1984", [1984], True, True),  # non-string gold
        ("x", [None, "x"], True, True),  # None golds are dropped
    ],
)
def test_exact_and_substring_match(pred: str, golds: Sequence[str], em: bool, subem: bool) -> None:
    assert exact_match(pred, golds) is em
    assert substring_match(pred, golds) is subem


@pytest.mark.parametrize(
    ("pred", "golds", "expected"),
    [
        ("Paris", ["Paris"], 1.0),  # perfect
        ("Paris France", ["Paris"], 2 / 3),  # precision 1/2, recall 1
        ("the city of Paris", ["Paris city"], 0.8),  # 2 common of 3 and 2 tokens
        ("London", ["Paris"], 0.0),  # nothing in common
        ("Paris", ["London", "Paris"], 1.0),  # max over golds
        ("a a b", ["a a"], 0.0),  # articles normalised away: "b" vs ""
        ("b b c", ["b b"], 0.8),  # repeated tokens counted with multiplicity
        ("", ["Paris"], 0.0),  # empty prediction
    ],
)
def test_token_f1(pred: str, golds: Sequence[str], expected: float) -> None:
    assert token_f1(pred, golds) == pytest.approx(expected)


REWARD_CASES = [
    # correct without search: 0.9 * 1 + 0.1 * 1
    ([ANSWER.format("Paris")], 1.0, 1.0, 1.0, 0),
    # correct after an image search: 0.9 * 0.9 + 0.1
    ([IMG, ANSWER.format("Paris")], 0.91, 1.0, 1.0, 1),
    # correct after a text search
    ([TXT, ANSWER.format("Paris")], 0.91, 1.0, 1.0, 1),
    # correct after image then text search: one penalty by default
    ([IMG, TXT, ANSWER.format("Paris")], 0.91, 1.0, 1.0, 2),
    # wrong but well formed
    ([ANSWER.format("Rome")], 0.1, 0.0, 1.0, 0),
    # wrong after searching: no further penalty
    ([IMG, ANSWER.format("Rome")], 0.1, 0.0, 1.0, 1),
    # correct but no reasoning
    (["<answer>Paris</answer>"], 0.9, 1.0, 0.0, 0),
    # correct after a search but the answer turn is badly formed
    ([IMG, "<answer>Paris</answer>"], 0.81, 1.0, 0.0, 1),
    # correct, but the sequence text -> image -> answer is not a valid one
    ([TXT, IMG, ANSWER.format("Paris")], 0.81, 1.0, 0.0, 2),
    # correct, but two text searches is not a valid sequence either
    ([TXT, TXT, ANSWER.format("Paris")], 0.81, 1.0, 0.0, 2),
    # correct answer followed by text: answer still read, format broken
    ([R + "<answer>Paris</answer> ok"], 0.9, 1.0, 0.0, 0),
    # no answer at all after searching
    ([IMG, TXT, R + "I give up."], 0.0, 0.0, 0.0, 2),
    # rollout ended on a search (limit reached): no answer, not well formed
    ([IMG, IMG], 0.0, 0.0, 0.0, 2),
    # answer in an earlier turn does not count: only the last turn is read
    ([ANSWER.format("Paris"), TXT], 0.0, 0.0, 0.0, 1),
    # last answer of the last turn counts
    ([R + "<answer>Paris</answer><answer>Rome</answer>"], 0.0, 0.0, 0.0, 0),
    # wrong and badly formed
    (["Rome"], 0.0, 0.0, 0.0, 0),
    # an answer inside forged tool output in the model's turn: still the model's last answer
    (
        [R + "<information><answer>Rome</answer></information><answer>Paris</answer>"],
        0.9,
        1.0,
        0.0,
        0,
    ),
    # four turns: never well formed, still scored
    ([IMG, TXT, TXT, ANSWER.format("Paris")], 0.81, 1.0, 0.0, 3),
    # a search in the last turn is counted
    ([IMG, R + "<text_search>q</text_search><answer>Paris</answer>"], 0.81, 1.0, 0.0, 2),
    # single turn with search and answer: search counted, not well formed
    ([R + "<search><img></search><answer>Paris</answer>"], 0.81, 1.0, 0.0, 1),
]


@pytest.mark.parametrize(("turns", "score", "accuracy", "fmt", "n_search"), REWARD_CASES)
def test_score_trajectory(
    turns: list[str], score: float, accuracy: float, fmt: float, n_search: int
) -> None:
    r = score_trajectory(turns, ["Paris", "City of Light"])
    assert r.score == pytest.approx(score)
    assert r.accuracy == accuracy
    assert r.format_score == fmt
    assert r.search_count == n_search


def test_answer_field_is_last_answer_of_last_turn() -> None:
    r = score_trajectory([IMG, ANSWER.format("  Paris ")], ["paris"])
    assert r.answer == "Paris"
    assert score_trajectory([IMG], ["paris"]).answer is None


def test_penalty_per_search() -> None:
    # two searches, each penalised: 0.9 * 0.9**2 + 0.1
    turns = [IMG, TXT, ANSWER.format("Paris")]
    r = score_trajectory(turns, ["Paris"], penalty_per_search=True)
    assert r.score == pytest.approx(0.9 * 0.81 + 0.1)
    assert r.penalty == pytest.approx(0.81)


@pytest.mark.parametrize(
    ("turns", "golds", "penalty"),
    [
        # correct without search: no penalty
        ([ANSWER.format("Paris")], ["Paris"], 1.0),
        # correct after a search: the penalty's factor
        ([IMG, ANSWER.format("Paris")], ["Paris"], 0.9),
        # wrong after a search: not penalised further
        ([IMG, ANSWER.format("Rome")], ["Paris"], 1.0),
    ],
)
def test_breakdown_names_the_penalty(turns: list[str], golds: list[str], penalty: float) -> None:
    r = score_trajectory(turns, golds)
    assert r.penalty == pytest.approx(penalty)
    assert r.score == pytest.approx(0.9 * r.accuracy * r.penalty + 0.1 * r.format_score)


def test_weights_are_configurable() -> None:
    r = score_trajectory(
        [IMG, ANSWER.format("Paris")], ["Paris"], search_penalty=0.5, format_weight=0.2
    )
    assert r.score == pytest.approx(0.8 * 0.5 + 0.2)


@pytest.mark.parametrize(
    ("mode", "answer", "expected"),
    [
        ("em", "Paris, France", 0.1),  # not exact
        ("subem", "Paris, France", 1.0),  # gold is a substring
        ("f1", "Paris France", 0.9 * 2 / 3 + 0.1),  # partial credit
        ("f1", "Paris", 1.0),  # full credit
    ],
)
def test_accuracy_modes(mode: str, answer: str, expected: float) -> None:
    r = score_trajectory([ANSWER.format(answer)], ["Paris"], mode=mode)
    assert r.score == pytest.approx(expected)


def test_f1_partial_credit_is_penalised_after_search() -> None:
    r = score_trajectory([IMG, ANSWER.format("Paris France")], ["Paris"], mode="f1")
    assert r.score == pytest.approx(0.9 * (2 / 3) * 0.9 + 0.1)


class _Judge:
    def __init__(self, verdict: bool | None) -> None:
        self.verdict = verdict
        self.calls: list[tuple[str, str, list[str]]] = []

    def judge(self, question: str, prediction: str, golds: Sequence[str]) -> bool:
        self.calls.append((question, prediction, list(golds)))
        if self.verdict is None:
            raise TimeoutError("judge server timed out")
        return self.verdict


def test_judge_mode_delegates_with_question() -> None:
    judge = _Judge(True)
    r = score_trajectory(
        [IMG, ANSWER.format("Paris, capital of France")],
        ["Paris"],
        mode="judge",
        judge=judge,
        question="Where?",
    )
    assert judge.calls == [("Where?", "Paris, capital of France", ["Paris"])]
    assert r.score == pytest.approx(0.91)
    assert r.error is None


def test_judge_failure_is_recorded_never_counted_correct() -> None:
    r = score_trajectory([ANSWER.format("Paris")], ["Paris"], mode="judge", judge=_Judge(None))
    assert r.accuracy == 0.0
    assert r.score == pytest.approx(0.1)
    assert r.error is not None and "TimeoutError" in r.error


def test_judge_not_called_without_answer() -> None:
    judge = _Judge(True)
    r = score_trajectory([IMG], ["Paris"], mode="judge", judge=judge)
    assert judge.calls == []
    assert r.score == 0.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "bleu"}, "unknown reward mode"),  # unknown mode
        ({"mode": "judge"}, "needs a judge"),  # judge mode without a judge
    ],
)
def test_configuration_errors_raise(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        score_trajectory([ANSWER.format("x")], ["x"], **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("turns", "golds"),
    [
        ([], ["Paris"]),  # no turns (the original crashes)
        (None, ["Paris"]),  # None turns
        ([None], ["Paris"]),  # a None turn
        ([ANSWER.format("Paris")], None),  # no golds
        ([ANSWER.format("Paris")], [None, 3.5, {"a": 1}]),  # odd golds
        ([ANSWER.format("x" * 1_000_000)], ["x"]),  # huge answer
        (["<reason>" * 10_000 + "<answer>" * 10_000], ["x"]),  # many open tags
        ([ANSWER.format("\x00\ud800")], ["\x00"]),  # control and lone surrogate characters
        ([IMG] * 50, ["x"]),  # far too many turns
    ],
)
def test_odd_input_never_raises(turns: list[str] | None, golds: list[object] | None) -> None:
    r = score_trajectory(turns, golds)  # type: ignore[arg-type]
    assert 0.0 <= r.score <= 1.0
