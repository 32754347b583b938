"""GRPO's advantages and loss against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from mmsr.train.loss import group_advantages, grpo_loss, zero_variance_share


def test_group_advantages_by_hand() -> None:
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.5, 0.5, 0.5, 0.5])
    adv = group_advantages(rewards, group_size=4)
    # group 1: mean 0.5, population std 0.5 -> +-1; group 2: all equal -> 0
    torch.testing.assert_close(
        adv, torch.tensor([1.0, -1.0, 1.0, -1.0, 0, 0, 0, 0]), atol=1e-5, rtol=0
    )
    assert zero_variance_share(rewards, 4) == 0.5
    # eight rewards of 0.1 (all wrong, well formatted): their float mean misses 0.1 by an ulp,
    # yet the advantages are exactly 0 (what algo.skip_zero_advantage tests for)
    flat = torch.full((8,), 0.1)
    assert flat.mean() != flat[0]
    assert torch.equal(group_advantages(flat, 8), torch.zeros(8))
    with pytest.raises(ValueError, match="do not split into groups of 3"):
        group_advantages(rewards, 3)


def test_loss_on_policy_is_minus_mean_advantage() -> None:
    # on-policy (ratio 1), no KL: loss = -sum(A * mask) / n_tokens
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, -1.0, -1.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    adv = torch.tensor([2.0, -1.0])
    loss, stats = grpo_loss(logp, logp.detach(), None, adv, mask)
    assert loss.item() == pytest.approx(-(2 + 2 - 1) / 3)
    assert (
        stats.trained_tokens == 3
        and stats.clip_fraction == 0.0
        and stats.ratio_mean == pytest.approx(1.0)
    )
    loss.backward()
    assert logp.grad is not None
    # d loss / d logp = -A * ratio / n on trained tokens, 0 elsewhere
    torch.testing.assert_close(logp.grad, torch.tensor([[-2 / 3, -2 / 3, 0.0], [1 / 3, 0.0, 0.0]]))


def test_clipping_by_hand() -> None:
    old = torch.zeros(1, 2)
    logp = torch.tensor([[math.log(1.5), math.log(0.5)]], requires_grad=True)
    mask = torch.ones(1, 2)
    # positive advantage: ratio 1.5 clipped to 1.2; ratio 0.5 kept (min picks 0.5)
    loss, stats = grpo_loss(logp, old, None, torch.tensor([1.0]), mask)
    assert loss.item() == pytest.approx(-(1.2 + 0.5) / 2)
    assert stats.clip_fraction == pytest.approx(0.5)
    # negative advantage: ratio 0.5 clipped to 0.8 (min of -0.5 and -0.8 is -0.8), 1.5 kept
    loss, _ = grpo_loss(logp, old, None, torch.tensor([-1.0]), mask)
    assert loss.item() == pytest.approx(-(-1.5 - 0.8) / 2)


def test_kl_term_by_hand() -> None:
    logp = torch.tensor([[-1.0]])
    ref = torch.tensor([[-2.0]])
    # k3: exp(-1) - (-1) - 1 = exp(-1)
    loss, stats = grpo_loss(logp, logp, ref, torch.tensor([0.0]), torch.ones(1, 1), kl_beta=0.5)
    assert stats.kl == pytest.approx(math.exp(-1))
    assert loss.item() == pytest.approx(0.5 * math.exp(-1))
    _, same = grpo_loss(logp, logp, logp, torch.tensor([0.0]), torch.ones(1, 1))
    assert same.kl == 0.0


def test_empty_mask_gives_zero_loss_not_nan() -> None:
    logp = torch.zeros(2, 3)
    loss, stats = grpo_loss(logp, logp, logp, torch.ones(2), torch.zeros(2, 3))
    assert loss.item() == 0.0 and stats.trained_tokens == 0


def test_unbiased_group_std_by_hand() -> None:
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0])
    # mean 0.25; squared deviations 0.5625 + 3 x 0.0625 = 0.75
    # N - 1 (veRL, torch.std): std = sqrt(0.75 / 3) = 0.5 -> (0.75, -0.25) / 0.5
    unbiased = group_advantages(rewards, 4, unbiased=True)
    torch.testing.assert_close(unbiased, torch.tensor([1.5, -0.5, -0.5, -0.5]), atol=1e-5, rtol=0)
    # N (the default): std = sqrt(0.75 / 4) = sqrt(3) / 4
    biased = group_advantages(rewards, 4)
    s = math.sqrt(3) / 4
    torch.testing.assert_close(
        biased, torch.tensor([0.75 / s, -0.25 / s, -0.25 / s, -0.25 / s]), atol=1e-5, rtol=0
    )
    # equal rewards still teach nothing either way
    assert group_advantages(torch.ones(4), 4, unbiased=True).abs().max() == 0.0


def test_kl_clamp_by_hand() -> None:
    # ref - logp = 3 and 1: k3 = e^3 - 4 = 16.0855 (clamped to 10) and e - 2 = 0.71828 (kept)
    logp = torch.tensor([[0.0, 0.0]], requires_grad=True)
    ref = torch.tensor([[3.0, 1.0]])
    args = (logp, logp.detach(), ref, torch.tensor([0.0]), torch.ones(1, 2))
    loss, stats = grpo_loss(*args, kl_beta=1.0, kl_clamp=10.0)
    assert stats.kl == pytest.approx((10 + math.e - 2) / 2)
    assert loss.item() == pytest.approx((10 + math.e - 2) / 2)
    loss.backward()
    assert logp.grad is not None
    # the clamped token gets no gradient; the other d k3 / d logp = 1 - e^1, over 2 tokens
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, (1 - math.e) / 2]]))
    # without the clamp (the default) the same tokens give the raw estimate
    _, raw = grpo_loss(*args, kl_beta=1.0)
    assert raw.kl == pytest.approx((math.exp(3) - 4 + math.e - 2) / 2)
