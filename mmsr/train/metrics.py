"""Training metrics: what one GRPO step's rollouts did, and where metrics are written.

``rollout_metrics`` turns a step's trajectories and rewards into slash-namespaced numbers
(``reward/*``, ``search/*``, ``rollout/*``); ``MetricsWriter`` appends every step's metrics to
``metrics.jsonl`` and, when asked, to TensorBoard and Weights & Biases. No model code here.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mmsr.rollout import EndReason, Trajectory
from mmsr.run_folder import read_finished
from mmsr.types import RewardBreakdown

logger = logging.getLogger(__name__)


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else 0.0


def rollout_metrics(
    trajectories: Sequence[Trajectory],
    rewards: Sequence[RewardBreakdown],
    categories: Sequence[str] | None = None,
) -> dict[str, float]:
    """Means over a step's rollouts; ``search/ratio`` is the share that searched at all.

    ``categories`` (one per rollout, e.g. ``search_free`` / ``search_required``) add
    ``search/ratio/<category>``: measurement only, the policy and the reward never see them.
    """
    n = len(trajectories)
    calls = [c for t in trajectories for c in t.tool_calls]
    scores = [r.score for r in rewards]
    mean = _mean(scores)
    metrics = {
        "reward/mean": mean,
        "reward/std": math.sqrt(_mean([(s - mean) ** 2 for s in scores])),
        "reward/accuracy": _mean([r.accuracy for r in rewards]),
        "reward/format": _mean([r.format_score for r in rewards]),
        "search/ratio": _mean([float(t.searched) for t in trajectories]),
        "search/image_calls": sum(c.tool == "image" for c in calls) / max(n, 1),
        "search/text_calls": sum(c.tool == "text" for c in calls) / max(n, 1),
        "search/failures": float(sum(c.error is not None for c in calls)),
        "search/latency_s": _mean([c.latency_s for c in calls]),
        "rollout/turns": _mean([float(len(t.actions)) for t in trajectories]),
        "rollout/tokens": _mean([float(len(t.token_ids)) for t in trajectories]),
        "rollout/generated_tokens": _mean([float(sum(t.loss_mask)) for t in trajectories]),
    }
    for reason in EndReason:
        share = _mean([float(t.end_reason is reason) for t in trajectories])
        metrics[f"rollout/end/{reason.value}"] = share
    for category in sorted({c for c in categories or () if c}):
        picked = [t for t, c in zip(trajectories, categories or (), strict=True) if c == category]
        metrics[f"search/ratio/{category}"] = _mean([float(t.searched) for t in picked])
    return metrics


class MetricsWriter:
    """Appends metrics to ``folder/metrics.jsonl``; TensorBoard and W&B when asked."""

    def __init__(
        self,
        folder: Path,
        *,
        tensorboard: bool = False,
        wandb: bool = False,
        config: Mapping[str, Any] | None = None,
        name: str = "metrics.jsonl",
    ) -> None:
        self.path = folder / name
        self._tb: Any = None
        self._wandb: Any = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(folder / "tensorboard"))
        if wandb:
            try:  # optional, never a dependency
                wandb_module: Any = importlib.import_module("wandb")
            except ImportError:
                logger.warning("run.wandb is set but wandb is not installed: not logging there")
            else:
                self._wandb = wandb_module.init(
                    project="mmsr", dir=str(folder), config=dict(config or {}), resume="allow"
                )

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        record = {"step": step, **{k: float(v) for k, v in metrics.items()}}
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for key, value in metrics.items():
                self._tb.add_scalar(key, value, step)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(dict(metrics), step=step)

    def truncate_after(self, step: int) -> None:
        """Drop lines past ``step`` (a resumed run rewrites what followed its checkpoint) and a
        last line a kill cut short (``read_finished``: a damaged line before it is an error);
        the file is replaced whole, so a kill now loses nothing."""
        if not self.path.exists():
            return
        kept = [row for row in read_finished(self.path) if row["step"] <= step]
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text("".join(json.dumps(row) + "\n" for row in kept), encoding="utf-8")
        os.replace(tmp, self.path)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
