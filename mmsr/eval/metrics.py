"""Evaluation metrics over finished rollouts (paper §4).

Accuracy by EM / SubEM / F1 (``mmsr.rewards``) and, when verdicts exist, by an LLM judge; the
search ratio under both of the paper's definitions — the share of rollouts that searched at all
(``search_ratio``) and the search calls made divided by the calls allowed (``search_call_ratio``;
"allowed" is what the protocol's limits let one rollout make, ``allowed_search_calls``: with one
image search, two text searches and three turns, no search in the last, that is 2, not 3);
which tools were used; the same per category and per need label; and, where need labels exist,
the precision and recall of the decision to search (did it search on the questions that needed
it?). Failures are shown beside them: failed image and text calls, failed questions (the policy
could not answer them at all, e.g. a chat API refused the prompt) and both search ratios again
counting successful calls only (``*_successful``). A failed question counts against accuracy:
it has no answer, so it is wrong, and ``n`` includes it. Pure functions over ``EvalRecord``s.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from mmsr.rewards import exact_match, substring_match, token_f1
from mmsr.rollout.engine import RolloutLimits

NO_SEARCH_NEEDED = "none"


def allowed_search_calls(limits: RolloutLimits) -> int:
    """The most search calls one rollout can make under ``limits``.

    Each search takes a turn of its own and the last turn may not search, so at most
    ``max_turns - 1`` calls run, and never more than the per-tool limits add up to.

    >>> allowed_search_calls(RolloutLimits(max_turns=3, max_image_searches=1, max_text_searches=2))
    2
    """
    return max(min(limits.max_image_searches + limits.max_text_searches, limits.max_turns - 1), 0)


DEFAULT_ALLOWED_CALLS = allowed_search_calls(RolloutLimits())
"""The protocol's default limits allow 2 calls (one image and one text search)."""


@dataclass(frozen=True)
class EvalRecord:
    """One evaluated question: what was asked, what the rollout did, what it answered."""

    id: str
    answer: str | None
    golds: tuple[str, ...]
    image_calls: int
    text_calls: int
    turns: int
    tokens: int = 0
    category: str = ""
    need: str | None = None
    """"none", "image", "text" or "both" when the data says what the question needs."""
    judge_correct: bool | None = None
    """The judge's verdict; ``None`` when not judged or when the judge's reply was unusable."""
    end_reason: str = ""
    failed_image_calls: int = 0
    """Image calls that failed (their error became the model's observation)."""
    failed_text_calls: int = 0
    failed: bool = False
    """The question failed as a whole (the policy's error is in its trajectory line)."""


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _accuracy(records: Sequence[EvalRecord], match: Callable[[str, Sequence[str]], float]) -> float:
    return _mean(
        [float(match(r.answer, r.golds)) if r.answer is not None else 0.0 for r in records]
    )


def _tool_shares(records: Sequence[EvalRecord]) -> dict[str, float]:
    n = len(records)
    image_only = sum(r.image_calls > 0 and r.text_calls == 0 for r in records)
    text_only = sum(r.text_calls > 0 and r.image_calls == 0 for r in records)
    both = sum(r.image_calls > 0 and r.text_calls > 0 for r in records)
    return {
        "image_only_ratio": image_only / n if n else 0.0,
        "text_only_ratio": text_only / n if n else 0.0,
        "both_ratio": both / n if n else 0.0,
    }


def summarize(
    records: Sequence[EvalRecord], *, allowed_calls: int = DEFAULT_ALLOWED_CALLS
) -> dict[str, Any]:
    """Headline metrics of a group of records (see the module docstring).

    ``allowed_calls``: the search calls one rollout may make (``allowed_search_calls``).
    """
    searched = [r.image_calls + r.text_calls > 0 for r in records]
    calls = sum(r.image_calls + r.text_calls for r in records)
    failed_image = sum(r.failed_image_calls for r in records)
    failed_text = sum(r.failed_text_calls for r in records)
    ok_searched = [
        r.image_calls + r.text_calls - r.failed_image_calls - r.failed_text_calls > 0
        for r in records
    ]
    allowed = allowed_calls * len(records)
    judged = [r.judge_correct for r in records if r.judge_correct is not None]
    out: dict[str, Any] = {
        "n": len(records),
        "accuracy_em": _accuracy(records, exact_match),
        "accuracy_subem": _accuracy(records, substring_match),
        "accuracy_f1": _accuracy(records, token_f1),
        "search_ratio": _mean([float(s) for s in searched]),
        "search_call_ratio": calls / allowed if records else 0.0,
        "search_ratio_successful": _mean([float(s) for s in ok_searched]),
        "search_call_ratio_successful": (
            (calls - failed_image - failed_text) / allowed if records else 0.0
        ),
        "failed_image_calls": failed_image,
        "failed_text_calls": failed_text,
        "failed_questions": sum(r.failed for r in records),
        **_tool_shares(records),
        "mean_turns": _mean([float(r.turns) for r in records]),
        "mean_tokens": _mean([float(r.tokens) for r in records]),
    }
    if judged:
        out["accuracy_judge"] = _mean([float(v) for v in judged])
        out["judge_coverage"] = len(judged) / len(records)
    return out


def search_decision(records: Sequence[EvalRecord]) -> dict[str, float] | None:
    """Precision and recall of searching, against need labels; ``None`` without labels."""
    labelled = [r for r in records if r.need is not None]
    if not labelled:
        return None
    needed = [r.need != NO_SEARCH_NEEDED for r in labelled]
    did = [r.image_calls + r.text_calls > 0 for r in labelled]
    true_pos = sum(n and d for n, d in zip(needed, did, strict=True))
    precision = true_pos / sum(did) if any(did) else 0.0
    recall = true_pos / sum(needed) if any(needed) else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "n_labelled": float(len(labelled))}


def _grouped(
    records: Sequence[EvalRecord], key: Callable[[EvalRecord], str | None], allowed: int
) -> dict[str, Any]:
    groups: dict[str, list[EvalRecord]] = defaultdict(list)
    for r in records:
        k = key(r)
        if k is not None and k != "":
            groups[k].append(r)
    return {k: summarize(v, allowed_calls=allowed) for k, v in sorted(groups.items())}


def compute_metrics(
    records: Sequence[EvalRecord], *, allowed_calls: int = DEFAULT_ALLOWED_CALLS
) -> dict[str, Any]:
    """Everything ``metrics.json`` holds: overall, per category, per need label, decisions."""
    metrics: dict[str, Any] = {
        "overall": summarize(records, allowed_calls=allowed_calls),
        "by_category": _grouped(records, lambda r: r.category, allowed_calls),
        "by_need": _grouped(records, lambda r: r.need, allowed_calls),
    }
    decision = search_decision(records)
    if decision is not None:
        metrics["search_decision"] = decision
    return metrics
