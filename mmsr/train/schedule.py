"""The learning-rate schedule of ``mmsr train grpo``: the multiplier ``LambdaLR`` applies.

Linear warm-up, then one of: ``constant``; ``cosine`` down to ``min_lr_ratio``; ``sigmoid``,
the original MMSearch-R1 release's schedule (``get_sigmoid_decay_schedule`` in its
``mmsearch_r1/utils/torch_functional.py``): flat, then a sigmoid down to ``min_lr_ratio``,
halfway at ``sigmoid_mid_step``, with a width of a tenth of it::

    factor(k) = low + (1 - low) / (1 + exp((k - mid) / (0.1 * mid)))

``k`` is the scheduler's step count (0 for the first optimiser step), as in the release. Its
training scripts use mid = 45 (``lr_sigmoid_decay_warmup_steps``) over a run of about 50 steps,
and ``lr_sigmoid_decay_ratio=0.95``, which we read as "decay by 95 %", i.e. low = 0.05 (its
config says 0 means no decay). What it is not: the SFT schedule (``mmsr.train.sft``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from mmsr.train.grpo_config import OptimSection


def sigmoid_decay(k: int, mid: int, low: float) -> float:
    """The release's flat-then-sigmoid multiplier after ``k`` scheduler steps.

    >>> round(sigmoid_decay(45, mid=45, low=0.05), 3)
    0.525
    """
    z = (k - mid) / (0.1 * mid)
    if z > 700:  # exp would overflow; the curve is at its floor long before
        return low
    return low + (1 - low) / (1 + math.exp(z))


def lr_factor(optim: OptimSection, total_steps: int) -> Callable[[int], float]:
    """The LR multiplier after ``k`` scheduler steps: linear warm-up, then the schedule."""

    def factor(k: int) -> float:
        step = k + 1  # the multiplier used by optimiser step k + 1
        if optim.warmup_steps and step <= optim.warmup_steps:
            return step / optim.warmup_steps
        if optim.schedule == "constant":
            return 1.0
        if optim.schedule == "sigmoid":
            return sigmoid_decay(k, optim.sigmoid_mid_step, optim.min_lr_ratio)
        # the first step after warm-up uses lr, the last one min_lr_ratio * lr
        span = max(total_steps - optim.warmup_steps - 1, 1)
        progress = min((step - optim.warmup_steps - 1) / span, 1.0)
        return optim.min_lr_ratio + (1 - optim.min_lr_ratio) * 0.5 * (
            1 + math.cos(math.pi * progress)
        )

    return factor
