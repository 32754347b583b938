"""GRPO's pure pieces (paper §2.2): group-normalised advantages and the loss.

``loss = token-mean over trained tokens of [ -min(r·A, clip(r, 1-ε, 1+ε)·A) + β·KL ]`` with
``r = exp(logp - logp_old)``, and the low-variance KL estimator (k3)
``KL ≈ exp(ref - logp) - (ref - logp) - 1`` against the frozen reference model. The token-mean
runs over every trained token of the batch at once, so long and short responses weigh by
their tokens. Shapes in comments: B rollouts, T tokens.

Two choices veRL (and so the original release) makes differently are options, off by default
so that the tiny run stays as it was: the group std with N − 1 (``unbiased``; veRL calls
``torch.std``) and the k3 estimate clamped to ±``kl_clamp`` (veRL's ``low_var_kl`` clamps to
±10; where it clamps, the KL term has no gradient).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def group_advantages(
    rewards: torch.Tensor, group_size: int, eps: float = 1e-6, *, unbiased: bool = False
) -> torch.Tensor:
    """``(r - mean) / (std + eps)`` within consecutive groups of ``group_size`` rollouts.

    ``rewards``: (B,) with B a multiple of ``group_size``; returns (B,). A group whose rewards
    are all equal gets advantages of 0 (it teaches nothing). ``unbiased``: the std divides by
    N − 1 (veRL's choice) rather than N.
    """
    if rewards.ndim != 1 or rewards.numel() % group_size:
        raise ValueError(f"{tuple(rewards.shape)} rewards do not split into groups of {group_size}")
    groups = rewards.float().view(-1, group_size)  # (B/G, G)
    mean = groups.mean(dim=1, keepdim=True)
    std = groups.std(dim=1, unbiased=unbiased, keepdim=True)
    advantages = (groups - mean) / (std + eps)
    # exactly 0 where the rewards agree: the float mean of equal values can miss them by an ulp,
    # which the eps would turn into advantages of ±1e-3 instead of 0
    flat = groups.max(dim=1, keepdim=True).values == groups.min(dim=1, keepdim=True).values
    return advantages.masked_fill(flat, 0.0).view(-1)


def zero_variance_share(rewards: torch.Tensor, group_size: int) -> float:
    """Share of groups whose rollouts all got the same reward."""
    groups = rewards.float().view(-1, group_size)
    return float((groups.max(dim=1).values == groups.min(dim=1).values).float().mean())


@dataclass(frozen=True)
class LossStats:
    loss: float
    policy_loss: float
    kl: float
    clip_fraction: float
    ratio_mean: float
    trained_tokens: int


def grpo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_eps: float = 0.2,
    kl_beta: float = 0.001,
    kl_clamp: float | None = None,
) -> tuple[torch.Tensor, LossStats]:
    """The GRPO loss of a batch and its statistics.

    ``logprobs`` (B, T) under the current policy (with gradients); ``old_logprobs`` (B, T) from
    sampling; ``ref_logprobs`` (B, T) from the frozen reference (``None`` skips the KL term);
    ``advantages`` (B,); ``mask`` (B, T), 1 on trained tokens; ``kl_clamp``: clamp each token's
    k3 estimate to ±this (``None``: no clamp).
    """
    mask = mask.float()
    n_tokens = mask.sum().clamp(min=1.0)
    log_ratio = logprobs - old_logprobs.detach()
    ratio = torch.exp(log_ratio)  # (B, T)
    adv = advantages.detach().float()[:, None]  # (B, 1)
    clipped = torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps)
    policy_term = -torch.minimum(ratio * adv, clipped * adv)  # (B, T)
    if ref_logprobs is not None:
        delta = ref_logprobs.detach() - logprobs
        kl = torch.exp(delta) - delta - 1  # (B, T), k3 estimator, >= 0
        if kl_clamp is not None:
            kl = torch.clamp(kl, min=-kl_clamp, max=kl_clamp)
    else:
        kl = torch.zeros_like(logprobs)
    loss = ((policy_term + kl_beta * kl) * mask).sum() / n_tokens
    with torch.no_grad():
        # where the clipped term is the one the objective uses (its gradient is zero there)
        is_clipped = ((adv > 0) & (ratio > 1 + clip_eps)) | ((adv < 0) & (ratio < 1 - clip_eps))
        stats = LossStats(
            loss=float(loss.detach()),
            policy_loss=float((policy_term * mask).sum() / n_tokens),
            kl=float((kl * mask).sum() / n_tokens),
            clip_fraction=float((is_clipped.float() * mask).sum() / n_tokens),
            ratio_mean=float((ratio * mask).sum() / n_tokens),
            trained_tokens=int(mask.sum()),
        )
    return loss, stats
