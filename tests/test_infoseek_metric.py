"""InfoSeek's official metric: numeric parsing, range matching and the split scores."""

from __future__ import annotations

from typing import Any

import pytest

from mmsr.eval.infoseek import evaluate_infoseek, numeric_match, parse_numeric_prediction


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("42", 42.0),  # one number
        ("about 1,234.5 metres", 1234.5),  # thousands separator and decimals
        ("9-10", (9.0, 10.0)),  # a dash between digits is a range
        ("from 3 to 7 metres", (3.0, 7.0)),  # the first two numbers
        ("10 to 5", 10.0),  # descending pair: its first number
        ("1 2 3", (1.0, 2.0)),  # only the first two count
        ("-5", -5.0),  # a sign is kept
        ("2e3", 2000.0),  # exponent
        ("no idea", (0.0, 0.0)),  # nothing numeric
        ("", (0.0, 0.0)),  # empty
    ],
)
def test_parse_numeric_prediction(text: str, expected: object) -> None:
    assert parse_numeric_prediction(text) == expected


@pytest.mark.parametrize(
    ("prediction", "answer", "expected"),
    [
        ("10", (9.0, 11.0), True),  # inside
        ("11", (9.0, 11.0), True),  # the bounds are inclusive
        ("12", (9.0, 11.0), False),  # outside
        ("9.5-10.5", (9.0, 11.0), True),  # a range inside
        ("10-12", (9.0, 11.0), False),  # overlap 1, union 3: IoU 1/3
        ("9-12", (9.0, 11.0), True),  # overlap 2, union 3: IoU 2/3
        ("nothing", (9.0, 11.0), False),  # [0, 0] never matches a positive range
    ],
)
def test_numeric_match(prediction: str, answer: tuple[float, float], expected: bool) -> None:
    assert numeric_match(prediction, answer) is expected


REFERENCES: list[dict[str, Any]] = [
    # unseen question split
    {
        "data_id": "q1",
        "answer_eval": ["Paris", "City of Light"],
        "data_split": "val_unseen_question",
    },
    {"data_id": "q2", "answer_eval": ["1889"], "data_split": "val_unseen_question"},
    {
        "data_id": "q3",
        "answer_eval": [{"wikidata": 300.0, "range": [290.0, 310.0]}],
        "data_split": "val_unseen_question",
    },
    {"data_id": "q4", "answer_eval": ["Seine"], "data_split": "val_unseen_question"},
    # unseen entity split
    {"data_id": "e1", "answer_eval": ["Rome"], "data_split": "val_unseen_entity"},
    {
        "data_id": "e2",
        "answer_eval": {"wikidata": 21.0, "range": [20.0, 22.0]},
        "data_split": "val_unseen_entity",
    },
]
QTYPES = [
    {"data_id": "q1", "question_type": "String"},
    {"data_id": "q2", "question_type": "Time"},
    {"data_id": "q3", "question_type": "Numerical"},
    {"data_id": "q4", "question_type": "String"},
    {"data_id": "e1", "question_type": "String"},
    {"data_id": "e2", "question_type": "Numerical"},
]


def test_split_and_final_scores() -> None:
    predictions = [
        {"data_id": "q1", "prediction": "the city of light"},  # alias, normalised: right
        {"data_id": "q2", "prediction": "1889"},  # time, exact: right
        {"data_id": "q3", "prediction": "about 305 m"},  # in range: right
        {"data_id": "q4", "prediction": "Loire"},  # wrong
        {"data_id": "e1", "prediction": "Milan"},  # wrong
        {"data_id": "e2", "prediction": "21"},  # right
        {"data_id": "zzz", "prediction": "ignored"},  # no reference: ignored
    ]
    result = evaluate_infoseek(predictions, REFERENCES, QTYPES)
    assert result["unseen_question_score"] == {
        "score": 75.0,
        "score_time": 100.0,
        "score_num": 100.0,
        "score_string": 50.0,
    }
    assert result["unseen_entity_score"] == {
        "score": 50.0,
        "score_time": 0.0,
        "score_num": 100.0,
        "score_string": 0.0,
    }
    assert result["final_score"] == 60.0  # 2 / (1/75 + 1/50)


def test_empty_split_gives_zero_final_score() -> None:
    result = evaluate_infoseek([{"data_id": "q1", "prediction": "Paris"}], REFERENCES, QTYPES)
    assert result["unseen_question_score"]["score"] == 100.0
    assert result["final_score"] == 0.0  # harmonic mean with an empty (0) split


def test_missing_question_type_is_named() -> None:
    with pytest.raises(ValueError, match="no question type for data_id 'q1'"):
        evaluate_infoseek([{"data_id": "q1", "prediction": "x"}], REFERENCES, [])


@pytest.mark.parametrize(
    ("answer_eval", "prediction", "expected"),
    [
        (["290", "310"], "300", 1),  # a range already written as two strings
        (300.0, "320", 1),  # a bare number: +/-10 %
        ({"wikidata": 300.0}, "340", 0),  # no range: +/-10 % of the value
    ],
)
def test_numeric_reference_forms(answer_eval: object, prediction: str, expected: int) -> None:
    refs = [{"data_id": "n", "answer_eval": answer_eval, "data_split": "x_unseen_entity"}]
    result = evaluate_infoseek(
        [{"data_id": "n", "prediction": prediction}],
        refs,
        [{"data_id": "n", "question_type": "Numerical"}],
    )
    assert result["unseen_entity_score"]["score_num"] == 100.0 * expected
