"""mmsr's reward as veRL's custom reward function; verl-free, no torch.

veRL's reward managers call ``compute_score(data_source=, solution_str=, ground_truth=,
extra_info=)`` with the row's ``extra_info`` plus the agent loop's ``extra_fields``. mmsr's
agent loop puts the assistant turns there (``mmsr_turns``) and the row's candidate answers
(``mmsr_golds``), so the score is ``mmsr.rewards.score_trajectory`` of exactly what the policy
wrote, never of the decoded response with its tool turns. Its options are the fields of
``mmsr.rewards.RewardConfig``, from veRL's ``reward.custom_reward_function.reward_kwargs``
(``mmsr train verl`` sets them from its run's reward settings). Use in a veRL config::

    reward.custom_reward_function.path=pkg://mmsr.integrations.verl.reward
    reward.custom_reward_function.name=compute_score
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from typing import Any

from mmsr.rewards import RewardConfig, score_trajectory

# Every result has these keys (veRL stacks them into per-sample arrays).
SCORE_KEYS = (
    "score",
    "acc",
    "format",
    "penalty",
    "search_count",
    "searched",
    "answered",
    "end_reason",
)


def golds_of(ground_truth: object, extra_info: Mapping[str, Any]) -> list[str]:
    """The gold answers: the agent loop's ``mmsr_golds`` (the row's candidate answers), else
    ``ground_truth`` — one answer, a list, or a JSON list as FVQA's ``candidate_answers``."""
    golds = extra_info.get("mmsr_golds")
    if golds is not None:
        return [str(g) for g in golds]
    if isinstance(ground_truth, str):
        if ground_truth.startswith("["):
            try:
                parsed = json.loads(ground_truth)
            except json.JSONDecodeError:
                return [ground_truth]
            return [str(g) for g in parsed] if isinstance(parsed, list) else [ground_truth]
        return [ground_truth]
    if ground_truth is None:
        return []
    if isinstance(ground_truth, Iterable):  # a list, or the numpy array a parquet column gives
        return [str(g) for g in ground_truth]
    return [str(ground_truth)]


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: object,
    extra_info: Mapping[str, Any] | None = None,
    *,
    mode: str = RewardConfig.mode,
    search_penalty: float = RewardConfig.search_penalty,
    format_weight: float = RewardConfig.format_weight,
    penalty_per_search: bool = RewardConfig.penalty_per_search,
    **kwargs: Any,
) -> dict[str, float | str]:
    """The reward of one rollout and its terms, with the same keys every time.

    Scores ``extra_info["mmsr_turns"]``; without it (a rollout not made by mmsr's agent loop)
    the decoded ``solution_str`` is taken as a single assistant turn.

    >>> r = compute_score("fvqa", "", "Paris",
    ...                   {"mmsr_turns": ["<reason>r</reason><answer>paris</answer>"]})
    >>> r["score"], r["acc"], r["searched"]
    (1.0, 1.0, 0.0)
    """
    info: Mapping[str, Any] = extra_info or {}
    turns = info.get("mmsr_turns")
    texts = [str(t) for t in turns] if turns is not None else [solution_str]
    reward = RewardConfig(mode, search_penalty, format_weight, penalty_per_search)
    breakdown = score_trajectory(texts, golds_of(ground_truth, info), **asdict(reward))
    return {
        "score": float(breakdown.score),
        "acc": float(breakdown.accuracy),
        "format": float(breakdown.format_score),
        "penalty": float(breakdown.penalty),
        "search_count": float(breakdown.search_count),
        "searched": float(breakdown.search_count > 0),
        "answered": float(breakdown.answer is not None),
        "end_reason": str(info.get("mmsr_end_reason") or ""),
    }
