"""The SFT check: greedy rollouts of a local model on world questions (format, accuracy, search).

Used by the SFT loop for its periodic check and by ``mmsr train sft-eval`` to measure a saved
checkpoint on a whole split. Rollouts go through the real ``RolloutEngine`` with the local
search, and are scored by ``mmsr.rewards.score_trajectory``; metrics are reported overall and
per category (``search_free`` = head, ``search_required`` = tail). The search ratio is the
share of rollouts with at least one search. Not the evaluation suite (``mmsr.eval``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from mmsr.data import sample_image
from mmsr.policy.local_model import build_hf_policy
from mmsr.rewards import RewardConfig, score_trajectory
from mmsr.rollout import RolloutEngine
from mmsr.rollout.engine import RolloutLimits, RolloutTask
from mmsr.search.base import ImageSearchBackend, TextSearchBackend
from mmsr.types import Sample

SFT_EVAL_LIMITS = RolloutLimits(max_new_tokens=96)
"""The limits of the warm start's evaluations unless its config says otherwise: the protocol's,
with turns as long as the teacher's longest reply needs."""


@dataclass(frozen=True)
class EvalConfig:
    """A greedy evaluation of the policy with the local search (its limits and reward are the
    SFT config's ``limits`` and ``reward`` sections)."""

    questions: int = 24
    """Questions per periodic evaluation, half head and half tail (0: every given question)."""
    batch_size: int = 16
    """Rollouts generated together."""


def pick_questions(samples: Sequence[Sample], n: int, seed: int) -> list[Sample]:
    """``n`` questions, half search-free and half search-required, seeded; all when n is 0."""
    if n <= 0:
        return list(samples)
    rng = random.Random(f"eval:{seed}")
    free = [s for s in samples if s.category == "search_free"]
    required = [s for s in samples if s.category != "search_free"]
    n_free = min(len(free), n // 2)
    picked = rng.sample(free, n_free) + rng.sample(required, min(len(required), n - n_free))
    return sorted(picked, key=lambda s: s.id)


def _summary(rows: list[dict[str, Any]]) -> dict[str, float]:
    n = max(1, len(rows))
    return {
        "n": float(len(rows)),
        "accuracy": sum(r["accuracy"] for r in rows) / n,
        "format": sum(r["format"] for r in rows) / n,
        "search_ratio": sum(r["searched"] for r in rows) / n,
        "reward": sum(r["reward"] for r in rows) / n,
    }


def evaluate_model(
    model: Any,
    tokenizer: Any,
    image_processor: Any,
    samples: Sequence[Sample],
    *,
    image_search: ImageSearchBackend,
    text_search: TextSearchBackend,
    config: EvalConfig = EvalConfig(),
    limits: RolloutLimits = SFT_EVAL_LIMITS,
    reward: RewardConfig = RewardConfig(),
) -> tuple[dict[str, dict[str, float]], list[dict[str, Any]]]:
    """Metrics ``{"all"|category: {...}}`` and one row per rollout, from greedy rollouts."""
    was_training = model.training
    model.train(False)
    policy, encoder = build_hf_policy(model, tokenizer, image_processor)
    engine = RolloutEngine(
        policy, image_search=image_search, text_search=text_search, limits=limits, encoder=encoder
    )
    rows: list[dict[str, Any]] = []
    with torch.no_grad():
        for start in range(0, len(samples), config.batch_size):
            chunk = samples[start : start + config.batch_size]
            tasks = [RolloutTask(s.id, s.question, sample_image(s)) for s in chunk]
            for sample, traj in zip(chunk, engine.run(tasks), strict=True):
                texts = traj.assistant_texts
                score = score_trajectory(texts, sample.golds, **asdict(reward))
                rows.append(
                    {
                        "id": sample.id,
                        "category": sample.category,
                        "accuracy": score.accuracy,
                        "format": score.format_score,
                        "reward": score.score,
                        "searched": traj.searched,
                        "end_reason": str(traj.end_reason),
                        "turns": texts,
                    }
                )
    model.train(was_training)
    return summarize_rows(rows), rows


def summarize_rows(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Metrics overall (``"all"``) and per category, from ``evaluate_model``'s rows."""
    metrics = {"all": _summary(list(rows))}
    for category in sorted({str(r["category"]) for r in rows}):
        metrics[category] = _summary([r for r in rows if r["category"] == category])
    return metrics
