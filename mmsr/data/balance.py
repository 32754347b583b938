"""Search balancing (paper §3): label questions by rollouts, then sample to a target ratio.

For each question, N rollouts of a search-capable policy:
* never correct → discarded (too hard, or the gold is wrong);
* correct at least once *without* any search → ``search_free``;
* otherwise → ``search_required``, with the finer need taken from the correct rollouts: the
  smallest search that sufficed (``image`` before ``text`` when either alone did), else ``both``.
Then the labelled set is subsampled so that ``search_required`` makes up ``ratio`` of it
(paper ≈ 68 %), deterministically from a seed. The core is pure: rollouts come from an
injected ``rollouts(sample, n)`` callable (a policy with the rollout engine, a scripted policy
in tests, or outcomes recorded in a JSONL file: ``outcome_record`` writes a line,
``load_outcomes`` reads the file; ``mmsr.data.outcomes`` makes them from a policy).
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmsr.data.readers import jsonl_rows
from mmsr.data.schema import DataError, FieldError, require_str
from mmsr.types import Sample

logger = logging.getLogger(__name__)

DEFAULT_RATIO = 0.68  # share of search_required in the paper's training data (§3)


@dataclass(frozen=True)
class RolloutOutcome:
    """What one rollout of one question did: whether it answered correctly, and its searches."""

    correct: bool
    image_searches: int = 0
    text_searches: int = 0

    @property
    def searched(self) -> bool:
        return self.image_searches > 0 or self.text_searches > 0


RolloutFn = Callable[[Sample, int], Sequence[RolloutOutcome]]


@dataclass(frozen=True)
class Label:
    """The balancing label of one question."""

    category: str
    """``search_free`` or ``search_required``."""
    search_need: str
    """``none``, ``image``, ``text`` or ``both``."""
    correct: int
    """How many of the rollouts were correct."""
    rollouts: int
    """How many rollouts were made."""


@dataclass(frozen=True)
class BalanceResult:
    """The balanced samples and what happened to the rest."""

    samples: list[Sample]
    labelled: int
    discarded: int
    no_rollouts: int
    search_free: int
    search_required: int


def _need(outcome: RolloutOutcome) -> str:
    if outcome.image_searches and outcome.text_searches:
        return "both"
    return "image" if outcome.image_searches else "text"


def label_outcomes(outcomes: Sequence[RolloutOutcome]) -> Label | None:
    """The label for one question's rollouts, or ``None`` when it is to be discarded."""
    correct = [o for o in outcomes if o.correct]
    if not correct:
        return None
    n = len(outcomes)
    if any(not o.searched for o in correct):
        return Label("search_free", "none", len(correct), n)
    needs = {_need(o) for o in correct}
    need = next(k for k in ("image", "text", "both") if k in needs)
    return Label("search_required", need, len(correct), n)


def labelled_sample(sample: Sample, label: Label) -> Sample:
    extra = {
        **sample.extra,
        "search_need": label.search_need,
        "rollouts": label.rollouts,
        "rollouts_correct": label.correct,
    }
    return dataclasses.replace(sample, category=label.category, extra=extra)


def sample_to_ratio(samples: Sequence[Sample], ratio: float, seed: int) -> list[Sample]:
    """The largest subset where ``search_required`` has share ``ratio``, order kept.

    The over-represented category is subsampled uniformly (``random.Random(seed)``); samples
    in neither category are dropped.
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"ratio must be in [0, 1], got {ratio}")
    required = [i for i, s in enumerate(samples) if s.category == "search_required"]
    free = [i for i, s in enumerate(samples) if s.category == "search_free"]
    n_req, n_free = len(required), len(free)
    if ratio == 1.0:
        n_free = 0
    elif ratio == 0.0:
        n_req = 0
    elif n_req > ratio / (1 - ratio) * n_free:
        n_req = round(n_free * ratio / (1 - ratio))
    else:
        n_free = round(n_req * (1 - ratio) / ratio)
    rng = random.Random(seed)
    keep = set(rng.sample(required, n_req)) | set(rng.sample(free, n_free))
    return [s for i, s in enumerate(samples) if i in keep]


def balance(
    samples: Sequence[Sample],
    rollouts: RolloutFn,
    *,
    n: int = 8,
    ratio: float = DEFAULT_RATIO,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> BalanceResult:
    """Label every sample from ``rollouts(sample, n)`` and sample to ``ratio`` (see module)."""
    labelled: list[Sample] = []
    discarded = no_rollouts = 0
    for sample in samples:
        outcomes = rollouts(sample, n)
        if progress is not None:
            progress(1)
        if not outcomes:
            no_rollouts += 1
            continue
        label = label_outcomes(outcomes)
        if label is None:
            discarded += 1
            continue
        labelled.append(labelled_sample(sample, label))
    balanced = sample_to_ratio(labelled, ratio, seed)
    n_req = sum(s.category == "search_required" for s in balanced)
    result = BalanceResult(
        samples=balanced,
        labelled=len(labelled),
        discarded=discarded,
        no_rollouts=no_rollouts,
        search_free=len(balanced) - n_req,
        search_required=n_req,
    )
    logger.info(
        "balanced: %d kept (%d search_required, %d search_free) of %d labelled; "
        "%d never correct, %d without rollouts",
        len(balanced),
        n_req,
        len(balanced) - n_req,
        len(labelled),
        discarded,
        no_rollouts,
    )
    return result


def outcome_record(data_id: str, outcome: RolloutOutcome) -> dict[str, Any]:
    """One line of an outcomes JSONL file, as ``load_outcomes`` reads it.

    >>> outcome_record("q1", RolloutOutcome(True, image_searches=1))
    {'data_id': 'q1', 'correct': True, 'image_searches': 1, 'text_searches': 0}
    """
    return {"data_id": data_id, **dataclasses.asdict(outcome)}


def load_outcomes(path: Path | str) -> dict[str, list[RolloutOutcome]]:
    """Recorded rollouts from JSONL, one per line: ``{"data_id", "correct", "image_searches",
    "text_searches"}``; grouped by ``data_id`` in file order. Bad lines raise ``DataError``."""
    path = Path(path)
    grouped: dict[str, list[RolloutOutcome]] = {}
    for raw in jsonl_rows(path):
        if raw.record is None:
            raise DataError(path, raw.index, None, raw.error or "unreadable")
        record = raw.record
        try:
            data_id = require_str(record, "data_id")
            outcome = RolloutOutcome(
                correct=_flag(record, "correct"),
                image_searches=_count(record, "image_searches"),
                text_searches=_count(record, "text_searches"),
            )
        except FieldError as err:
            raise DataError(path, raw.index, err.field, err.message) from None
        grouped.setdefault(data_id, []).append(outcome)
    return grouped


def _flag(record: Mapping[str, Any], field: str) -> bool:
    value = record.get(field)
    if not isinstance(value, bool):
        raise FieldError(field, f"expected true or false, got {value!r}")
    return value


def _count(record: Mapping[str, Any], field: str) -> int:
    value = record.get(field, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise FieldError(field, f"expected a count >= 0, got {value!r}")
    return value
