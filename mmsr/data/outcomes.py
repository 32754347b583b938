"""Rollout outcomes for search balancing (paper §3): N rollouts of each question on the engine,
each reduced to whether it was correct and how many searches it made.

What ``mmsr data balance --policy`` records (one ``mmsr.data.balance.outcome_record`` per
rollout) before labelling. Not here: the labelling rule and the sampling to a ratio
(``mmsr.data.balance``), building the policy or the tools (the CLI).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator, Sequence

from mmsr.data.balance import RolloutOutcome
from mmsr.data.images import sample_image
from mmsr.rewards import score_trajectory
from mmsr.rollout.engine import RolloutEngine, RolloutTask
from mmsr.rollout.trajectory import Trajectory
from mmsr.types import Sample


def trajectory_outcome(traj: Trajectory, golds: Sequence[str]) -> RolloutOutcome:
    """Correct by the reward's exact match; the searches are the calls that ran without error.

    A failed call brought the model no information, so a correct answer after it was found
    without that search.
    """
    calls = [c for c in traj.tool_calls if c.error is None]
    return RolloutOutcome(
        correct=score_trajectory(traj.assistant_texts, golds).accuracy > 0,
        image_searches=sum(c.tool == "image" for c in calls),
        text_searches=sum(c.tool == "text" for c in calls),
    )


def rollout_seed(seed: int, sample_id: str, k: int) -> int:
    """The seed of rollout ``k`` of a question: independent of batching and order."""
    return (seed * 1_000_003 + zlib.crc32(f"{sample_id}#{k}".encode())) % 2**31


def iter_outcomes(
    engine: RolloutEngine,
    samples: Sequence[Sample],
    n: int,
    *,
    seed: int = 0,
    batch_size: int = 16,
    progress: Callable[[int], None] | None = None,
) -> Iterator[tuple[str, RolloutOutcome]]:
    """``(sample id, outcome)`` for ``n`` rollouts of every sample with an image, in sample
    order, ``batch_size`` rollouts per engine call; ``progress(k)`` after each call."""
    if n < 1 or batch_size < 1:
        raise ValueError(f"n and batch_size must be at least 1, got {n} and {batch_size}")
    work = [(s, k) for s in samples if s.image is not None for k in range(n)]
    for start in range(0, len(work), batch_size):
        chunk = work[start : start + batch_size]
        tasks = [RolloutTask(f"{s.id}#{k}", s.question, sample_image(s)) for s, k in chunk]
        seeds: list[int | None] = [rollout_seed(seed, s.id, k) for s, k in chunk]
        for (sample, _), traj in zip(chunk, engine.run(tasks, seeds), strict=True):
            yield sample.id, trajectory_outcome(traj, sample.golds)
        if progress is not None:
            progress(len(chunk))
