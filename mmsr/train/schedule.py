"""The learning-rate schedule of every trainer: the multiplier of the peak LR at each step.

``lr_multiplier`` is the one formula (GRPO, SFT and vision pretraining call it); ``lr_factor``
is GRPO's ``LambdaLR`` function over it. Linear warm-up, then one of: ``constant``; ``cosine``
down to ``min_ratio`` over the budget's progress; ``sigmoid``,
the original MMSearch-R1 release's schedule (``get_sigmoid_decay_schedule`` in its
``mmsearch_r1/utils/torch_functional.py``): flat, then a sigmoid down to ``min_lr_ratio``,
halfway at ``sigmoid_mid_step``, with a width of a tenth of it::

    factor(k) = low + (1 - low) / (1 + exp((k - mid) / (0.1 * mid)))

``k`` is the scheduler's step count (0 for the first optimiser step), as in the release. Its
training scripts use mid = 45 (``lr_sigmoid_decay_warmup_steps``) over a run of about 50 steps,
and ``lr_sigmoid_decay_ratio=0.95``, which we read as "decay by 95 %", i.e. low = 0.05 (its
config says 0 means no decay). Not here: how a trainer measures its budget's progress.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

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


def lr_multiplier(
    step: int,
    progress: float,
    *,
    warmup_steps: int,
    shape: Literal["constant", "cosine", "sigmoid"] = "cosine",
    min_ratio: float = 0.0,
    sigmoid_mid_step: int = 0,
    warmup_scales_decay: bool = False,
) -> float:
    """The LR multiplier of optimiser step ``step`` (0 for the first).

    Steps below ``warmup_steps`` ramp linearly, ``(step + 1) / warmup_steps``; after them comes
    ``shape``: the cosine runs from 1 to ``min_ratio`` as ``progress`` (the share of the decay
    done, clipped at 1) goes from 0 to 1; the sigmoid counts ``step`` (``sigmoid_decay``). With
    ``warmup_scales_decay`` (SFT) the ramp multiplies the decay instead of replacing it.

    >>> lr_multiplier(1, 0.0, warmup_steps=4), lr_multiplier(9, 1.0, warmup_steps=4)
    (0.5, 0.0)
    """
    if step < warmup_steps and not warmup_scales_decay:
        return (step + 1) / warmup_steps
    if shape == "constant":
        decay = 1.0
    elif shape == "sigmoid":
        decay = sigmoid_decay(step, sigmoid_mid_step, min_ratio)
    else:
        decay = min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return (step + 1) / warmup_steps * decay if step < warmup_steps else decay


def lr_factor(optim: OptimSection, total_steps: int) -> Callable[[int], float]:
    """GRPO's ``LambdaLR`` function: the multiplier after ``k`` scheduler steps, the cosine
    running from the first step after warm-up (lr) to the last one (``min_lr_ratio`` × lr)."""
    span = max(total_steps - optim.warmup_steps - 1, 1)

    def factor(k: int) -> float:
        return lr_multiplier(
            k,
            (k - optim.warmup_steps) / span,
            warmup_steps=optim.warmup_steps,
            shape=optim.schedule,
            min_ratio=optim.min_lr_ratio,
            sigmoid_mid_step=optim.sigmoid_mid_step,
        )

    return factor
