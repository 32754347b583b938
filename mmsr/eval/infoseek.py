"""InfoSeek's official metric, reimplemented from its published definition.

Each reference has a ``question_type`` (from the qtype file): ``String`` and ``Time`` answers
are scored by exact match (SQuAD normalisation) against any of the ``answer_eval`` aliases;
``Numerical`` answers by ranges: the reference range is ``answer_eval``'s ``range``; a single
predicted number must fall inside it, a predicted range must lie inside it or overlap it with
an intersection-over-union of at least 0.5. The first two numbers of the prediction make its
range ("9-10", "from 9 to 10"); a descending pair counts as its first number; no number at all
counts as the range [0, 0]. Scores are computed per split (``data_split`` ending in
``unseen_question`` or not, i.e. unseen entity); the final score is the harmonic mean of the two
split scores. All scores are percentages rounded to two decimals.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from mmsr.rewards import exact_match

_NUMBER = re.compile(r"[-+]?\.?\d+(?:,\d{3})*\.?\d*(?:[eE][-+]?\d+)?")
_DIGIT_DASH = re.compile(r"(?<=\d)-")
IOU_THRESHOLD = 0.5


def parse_numeric_prediction(text: str) -> float | tuple[float, float]:
    """A number or a (low, high) range from free text, as the reference metric reads it."""
    numbers: list[float] = []
    for match in _NUMBER.findall(_DIGIT_DASH.sub(" - ", text or "")):
        cleaned = match.replace(",", "").strip(".")
        if cleaned.count(".") > 1:
            cleaned = cleaned.split(".")[0]
        try:
            numbers.append(float(cleaned))
        except ValueError:
            continue
        if len(numbers) == 2:
            break
    if len(numbers) == 2:
        low, high = numbers
        return (low, high) if low <= high else low
    if numbers:
        return numbers[0]
    return (0.0, 0.0)


def _iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    overlap = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0] + 1e-12) + (b[1] - b[0] + 1e-12) - overlap
    return overlap / union if union else 0.0


def numeric_match(prediction: str, answer_range: tuple[float, float]) -> bool:
    """Whether a free-text numeric prediction matches the reference range."""
    pred = parse_numeric_prediction(prediction)
    low, high = answer_range
    if isinstance(pred, float):
        return low <= pred <= high
    if low <= pred[0] <= high and low <= pred[1] <= high:
        return True
    return _iou(pred, (low, high)) >= IOU_THRESHOLD - 1e-12


def _answer_range(answer_eval: Any) -> tuple[float, float]:
    """The reference range: a ``{"range"}`` record (or a list of them), ``[lo, hi]``, a number."""
    item = answer_eval
    if isinstance(item, list) and item and isinstance(item[0], Mapping):
        item = item[0]
    if isinstance(item, Mapping):
        item = item.get("range", item.get("wikidata"))
    if isinstance(item, list | tuple) and len(item) >= 2:
        low, high = float(item[0]), float(item[1])
        return (low, high)
    value = float(item[0] if isinstance(item, list | tuple) else item)
    return (value * 0.9, value * 1.1) if value >= 0 else (value * 1.1, value * 0.9)


def _aliases(answer_eval: Any) -> list[str]:
    values = answer_eval if isinstance(answer_eval, list) else [answer_eval]
    return [str(v) for v in values if v is not None]


def _score(prediction: str, reference: Mapping[str, Any], qtype: str) -> int:
    if qtype == "numerical":
        return int(numeric_match(prediction, _answer_range(reference["answer_eval"])))
    return int(exact_match(prediction, _aliases(reference["answer_eval"])))


def _percent(hits: Sequence[int]) -> float:
    return round(100 * sum(hits) / len(hits), 2) if hits else 0.0


def _split_scores(scored: Iterable[tuple[str, int]]) -> dict[str, float]:
    by_type: dict[str, list[int]] = {"time": [], "numerical": [], "string": []}
    for qtype, hit in scored:
        by_type[
            "time" if qtype == "time" else "numerical" if qtype == "numerical" else "string"
        ].append(hit)
    every = [h for hits in by_type.values() for h in hits]
    return {
        "score": _percent(every),
        "score_time": _percent(by_type["time"]),
        "score_num": _percent(by_type["numerical"]),
        "score_string": _percent(by_type["string"]),
    }


def harmonic_mean(*values: float) -> float:
    safe = [v if v != 0 else 1e-12 for v in values]
    return len(safe) / sum(1.0 / v for v in safe)


def evaluate_infoseek(
    predictions: Sequence[Mapping[str, Any]],
    references: Sequence[Mapping[str, Any]],
    qtypes: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """InfoSeek's final, unseen-question and unseen-entity scores for ``predictions``.

    ``predictions``: ``[{"data_id", "prediction"}]``; ``references``: InfoSeek jsonl records
    (``data_id``, ``answer_eval``, ``data_split``); ``qtypes``: ``[{"data_id",
    "question_type"}]``. Predictions without a reference are ignored; a reference without a
    question type is an error naming it.
    """
    qtype_of = {str(q["data_id"]): str(q["question_type"]).lower() for q in qtypes}
    by_id = {str(r["data_id"]): r for r in references}
    splits: dict[str, list[tuple[str, int]]] = {"unseen_question": [], "unseen_entity": []}
    for pred in predictions:
        ref = by_id.get(str(pred["data_id"]))
        if ref is None:
            continue
        if str(ref["data_id"]) not in qtype_of:
            raise ValueError(f"no question type for data_id {ref['data_id']!r}")
        qtype = qtype_of[str(ref["data_id"])]
        split = (
            "unseen_question"
            if str(ref.get("data_split", "")).endswith("unseen_question")
            else "unseen_entity"
        )
        splits[split].append((qtype, _score(str(pred.get("prediction") or ""), ref, qtype)))
    question, entity = (
        _split_scores(splits["unseen_question"]),
        _split_scores(splits["unseen_entity"]),
    )
    return {
        "final_score": round(harmonic_mean(question["score"], entity["score"]), 2),
        "unseen_question_score": question,
        "unseen_entity_score": entity,
    }
