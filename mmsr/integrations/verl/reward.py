"""mmsr's reward as veRL's custom reward function; verl-free, no torch.

veRL's reward managers call ``compute_score(data_source=, solution_str=, ground_truth=,
extra_info=)`` with the row's ``extra_info`` plus the agent loop's ``extra_fields``. mmsr's
agent loop puts the assistant turns there (``mmsr_turns``) and the row's candidate answers
(``mmsr_golds``), so the score is ``mmsr.rewards.score_trajectory`` of exactly what the policy
wrote, never of the decoded response with its tool turns. Its options are the fields of
``mmsr.rewards.RewardConfig``, from veRL's ``reward.custom_reward_function.reward_kwargs``
(``mmsr train verl`` sets them from its run's reward settings). With ``mode="judge"`` the
accuracy is the verdict of the judge at ``judge_endpoint`` (one call per distinct question and
answer in the process; a failed call scores 0 and is counted); ``compute_score_batch`` judges a
whole batch concurrently (veRL's batch reward manager). Use in a veRL config::

    reward.custom_reward_function.path=pkg://mmsr.integrations.verl.reward
    reward.custom_reward_function.name=compute_score
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from mmsr.rewards import RewardConfig
from mmsr.rewards.judge import score_many
from mmsr.types import RewardBreakdown

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
    "judge_failed",
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
    judge_endpoint: str | None = RewardConfig.judge_endpoint,
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
    reward = RewardConfig(mode, search_penalty, format_weight, penalty_per_search, judge_endpoint)
    return _scores([solution_str], [ground_truth], [extra_info], reward)[0]


def compute_score_batch(
    data_sources: Sequence[str],
    solution_strs: Sequence[str],
    ground_truths: Sequence[object],
    extra_infos: Sequence[Mapping[str, Any] | None],
    *,
    mode: str = RewardConfig.mode,
    search_penalty: float = RewardConfig.search_penalty,
    format_weight: float = RewardConfig.format_weight,
    penalty_per_search: bool = RewardConfig.penalty_per_search,
    judge_endpoint: str | None = RewardConfig.judge_endpoint,
    **kwargs: Any,
) -> list[dict[str, float | str]]:
    """``compute_score`` of a whole batch; in ``judge`` mode its answers are judged at once."""
    reward = RewardConfig(mode, search_penalty, format_weight, penalty_per_search, judge_endpoint)
    return _scores(solution_strs, ground_truths, extra_infos, reward)


def _scores(
    solution_strs: Sequence[str],
    ground_truths: Sequence[object],
    extra_infos: Sequence[Mapping[str, Any] | None],
    reward: RewardConfig,
) -> list[dict[str, float | str]]:
    infos: list[Mapping[str, Any]] = [info or {} for info in extra_infos]
    texts = [
        [str(t) for t in info["mmsr_turns"]] if info.get("mmsr_turns") is not None else [sol]
        for sol, info in zip(solution_strs, infos, strict=True)
    ]
    golds = [golds_of(g, info) for g, info in zip(ground_truths, infos, strict=True)]
    questions = [str(info.get("mmsr_question") or info.get("question") or "") for info in infos]
    breakdowns = score_many(texts, golds, questions, reward)
    return [_result(b, info) for b, info in zip(breakdowns, infos, strict=True)]


def _result(breakdown: RewardBreakdown, info: Mapping[str, Any]) -> dict[str, float | str]:
    return {
        "score": float(breakdown.score),
        "acc": float(breakdown.accuracy),
        "format": float(breakdown.format_score),
        "penalty": float(breakdown.penalty),
        "search_count": float(breakdown.search_count),
        "searched": float(breakdown.search_count > 0),
        "answered": float(breakdown.answer is not None),
        "end_reason": str(info.get("mmsr_end_reason") or ""),
        "judge_failed": float(breakdown.error is not None),
    }
