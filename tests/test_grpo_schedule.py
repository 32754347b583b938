"""The GRPO learning-rate schedules and veRL's choices as options, against values by hand."""

from __future__ import annotations

import math

import pytest

from mmsr.train.grpo_config import load_grpo_config
from mmsr.train.schedule import lr_factor, sigmoid_decay


@pytest.mark.parametrize(
    ("k", "expected"),
    [
        # mid 10, width 1, floor 0.1: factor = 0.1 + 0.9 / (1 + e^(k - 10))
        (0, 0.1 + 0.9 / (1 + math.exp(-10))),  # flat: 0.99996
        (9, 0.1 + 0.9 / (1 + math.exp(-1))),  # 0.75795
        (10, 0.55),  # halfway down at mid
        (11, 0.1 + 0.9 / (1 + math.e)),  # 0.34205
        (30, 0.1 + 0.9 / (1 + math.exp(20))),  # at the floor
        (10**6, 0.1),  # far past the end: no overflow
    ],
)
def test_sigmoid_decay_by_hand(k: int, expected: float) -> None:
    assert sigmoid_decay(k, mid=10, low=0.1) == pytest.approx(expected, abs=1e-9)


def test_sigmoid_schedule_after_warm_up() -> None:
    cfg = load_grpo_config(
        "tiny-cpu",
        [
            "--optim.schedule=sigmoid",
            "--optim.warmup_steps=2",
            "--optim.sigmoid_mid_step=10",
            "--optim.min_lr_ratio=0.1",
        ],
    )
    factor = lr_factor(cfg.optim, total_steps=40)
    # linear warm-up over two steps, then the release's curve on the scheduler's own count
    assert [factor(0), factor(1)] == [0.5, 1.0]
    assert factor(10) == pytest.approx(0.55)
    assert factor(2) == pytest.approx(sigmoid_decay(2, mid=10, low=0.1))


def test_tiny_preset_keeps_mmsr_choices_and_the_7b_preset_takes_verls() -> None:
    tiny = load_grpo_config("tiny-cpu")
    # the demo's run: population std, no KL clamp, flat LR after warm-up (as before issue 15)
    assert (tiny.algo.unbiased_std, tiny.algo.kl_clamp, tiny.optim.schedule) == (
        False,
        None,
        "constant",
    )
    big = load_grpo_config("qwen2.5-vl-7b-1gpu")
    assert (big.algo.unbiased_std, big.algo.kl_clamp) == (True, 10.0)
    assert (big.optim.schedule, big.optim.min_lr_ratio, big.optim.warmup_steps) == (
        "sigmoid",
        0.05,
        0,
    )
    # halfway down at 45/50 of the run, as in the release's scripts
    assert big.optim.sigmoid_mid_step / big.run.steps == pytest.approx(45 / 50)
    assert lr_factor(big.optim, big.run.steps)(0) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--algo.kl_clamp=0"], "kl_clamp must be positive"),
        (["--optim.schedule=sigmoid", "--optim.sigmoid_mid_step=0"], "sigmoid_mid_step"),
    ],
)
def test_bad_options_are_errors(args: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_grpo_config("tiny-cpu", args)
