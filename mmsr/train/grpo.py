"""GRPO training of a local policy with search (paper §2.2): ``train_grpo``.

One step: take ``prompts_per_step`` questions in a seeded order, roll each out G times with the
rollout engine (temperature sampling, one seed per rollout), score every trajectory with
``mmsr.rewards.score_trajectory`` (accuracy × search penalty + format), normalise the rewards
within each group, and update the policy with the PPO-clip loss plus β·KL to the frozen initial
model, token-mean over the generated tokens, accumulated over micro-batches, with AdamW, gradient
clipping and the LR schedule (``mmsr.train.schedule``). Every N steps: an atomic checkpoint and
a sample of trajectories. The model's device (``model.device``), bf16 autocast and LoRA
(``mmsr.train.lora``: adapters trained, the reference = adapters disabled) change where and in
what precision this runs, not the algorithm. With ``rollout.backend: vllm`` a colocated vLLM
engine samples (``mmsr.train.rollout_backend``: asleep during each update, the new weights
pushed into it after every optimizer step) and the old log-probs are recomputed by the trainer
(``algo.recompute_old_logprobs``), since the engine's numerics differ from the trainer's.

What it is not: model loading, the world and the search backends (``mmsr.train.grpo_setup``);
the command line (``mmsr.train.grpo_cli``); the loss itself (``mmsr.train.loss``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from mmsr.config import config_to_dict, dump_yaml
from mmsr.data import sample_image
from mmsr.models.image_processor import ImageProcessor
from mmsr.models.io import load_model
from mmsr.protocol.prompts import resolve_prompt_set
from mmsr.rewards import RewardConfig, score_trajectory
from mmsr.rollout import RolloutEngine, RolloutTask, write_trajectories
from mmsr.run_folder import hold_run_folder
from mmsr.search.base import SearchBackends
from mmsr.train import lora
from mmsr.train.batch import TokenSequence, TrainBatch, collate, token_logprobs
from mmsr.train.checkpoint import (
    latest_checkpoint,
    load_trainer_state,
    newest_intact,
    save_checkpoint,
)
from mmsr.train.checkpoint import set_rng_state as restore_rng
from mmsr.train.grpo_config import AlgoSection, GRPOConfig
from mmsr.train.loss import group_advantages, grpo_loss, zero_variance_share
from mmsr.train.metrics import MetricsWriter, rollout_metrics
from mmsr.train.rollout_backend import Rollout, build_rollout, trainer_weights
from mmsr.train.schedule import lr_factor
from mmsr.types import RewardBreakdown, Sample

logger = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss or the gradients stopped being finite; the last good checkpoint is kept."""


@dataclass
class GRPOParts:
    """What the loop trains and with what: built from a config by ``grpo_setup.build_parts``."""

    model: Any
    """The policy (a Qwen2.5-VL model); trained in place."""
    reference: Any | None
    """A frozen copy of the initial policy for the KL term (LoRA: ``lora.Reference``, the
    model with its adapters disabled); None when ``kl_beta`` is 0."""
    tokenizer: Any
    image_processor: ImageProcessor
    samples: list[Sample]
    """The training questions (each with an image)."""
    search: SearchBackends
    source: Path | None = None
    """The folder the model was loaded from (a vLLM engine reads its config and tokenizer)."""


# --- small pure helpers ---


def prompt_indices(n_samples: int, seed: int, step: int, count: int) -> list[int]:
    """Indices of step ``step``'s questions (1-based steps): a fresh permutation per epoch.

    A pure function of (seed, step), so the data position needs no saved state.
    """
    out = []
    for position in range((step - 1) * count, step * count):
        epoch, offset = divmod(position, n_samples)
        order = list(range(n_samples))
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
        out.append(order[offset])
    return out


def score_all(
    trajectories: Sequence[Any], samples: Sequence[Sample], reward: RewardConfig
) -> list[RewardBreakdown]:
    """The reward of each trajectory against its sample's golds (``judge`` mode: the judge of
    ``reward.judge_endpoint``, one call per distinct answer, failures scored 0)."""
    if reward.mode == "judge":
        from mmsr.rewards.judge import score_many

        texts = [t.assistant_texts for t in trajectories]
        golds = [s.golds for s in samples]
        return score_many(texts, golds, [s.question for s in samples], reward)
    return [
        score_trajectory(t.assistant_texts, s.golds, **asdict(reward), question=s.question)
        for t, s in zip(trajectories, samples, strict=True)
    ]


def probe_indices(n_samples: int, seed: int, count: int) -> list[int]:
    """The probe's questions: a fixed draw of ``count`` (at most all) from the training set."""
    return random.Random(seed * 1_000_003 - 1).sample(range(n_samples), min(count, n_samples))


def _decision_reader(
    cfg: GRPOConfig, parts: GRPOParts, samples: Sequence[Sample]
) -> Callable[[Any], dict[str, float]] | None:
    """The decision probe over the probe's questions (``mmsr.train.decision_probe``: P(search)
    per question and its AUC between search-required and search-free ones), when the training
    questions are a built world's (the probe needs their entities); else None."""
    from mmsr.models.chat_encoder import ChatEncoder
    from mmsr.train.decision_probe import (
        decision_figures,
        probe_metrics,
        read_decisions,
        world_entities,
    )

    entities = world_entities(Path(cfg.data.train).parent)
    if entities is None or not samples:
        return None
    if not all(str(s.extra.get("entity")) in entities for s in samples):
        logger.info("the decision probe is off: the probe's questions are not the world's")
        return None
    encoder = ChatEncoder(parts.tokenizer, parts.image_processor)
    prompts = resolve_prompt_set(cfg.prompts)

    def read(model: Any) -> dict[str, float]:
        rows = read_decisions(model, encoder, parts.image_processor, samples, entities, prompts)
        return probe_metrics(decision_figures(rows))

    return read


@contextlib.contextmanager
def greedy(policy: Any) -> Any:
    """``policy`` sampling greedily inside the block (its ``temperature`` set to 0)."""
    if not hasattr(policy, "temperature"):
        raise ValueError(f"{type(policy).__name__} has no temperature to make the probe greedy")
    before = policy.temperature
    policy.temperature = 0.0
    try:
        yield policy
    finally:
        policy.temperature = before


def rollout_seeds(seed: int, step: int, n: int) -> list[int]:
    """One sampling seed per rollout of a step (distinct across steps and rollouts)."""
    rng = random.Random(seed * 7_919 + step)
    return [rng.getrandbits(40) for _ in range(n)]


def sample_fields(
    step: int,
    samples: Sequence[Sample],
    rewards: Sequence[RewardBreakdown],
    advantages: Sequence[float],
    group_size: int,
) -> list[dict[str, Any]]:
    """What a dumped training sample carries beside its trajectory: the step, its group (the
    prompt's index in the step; rollouts of one prompt are consecutive), golds, labels, the
    reward breakdown and the advantage it was trained with — what ``mmsr inspect`` groups by."""
    return [
        {
            "step": step,
            "group": i // group_size,
            "golds": s.golds,
            "category": s.category or "",
            "need": None if s.extra.get("search_need") is None else str(s.extra["search_need"]),
            "reward": dataclasses.asdict(r),
            "advantage": float(a),
        }
        for i, (s, r, a) in enumerate(zip(samples, rewards, advantages, strict=True))
    ]


def set_threads(threads: int) -> int:
    """torch's intra-op threads: ``threads``, or every core this process may use when 0."""
    n = threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(n)
    return n


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def dump_samples(
    trajectories: Sequence[Any], folder: Path, extras: Sequence[dict[str, Any]]
) -> Path:
    """Write a step's sample dump whole: into a temporary folder renamed over ``folder``, so
    that a resumed run redoing the step replaces the dump a killed run left, never adds to it."""
    tmp = folder.with_name(f".tmp-{folder.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    write_trajectories(trajectories, tmp, extras)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return folder


# --- the update ---


def compute_context(device: torch.device, autocast: bool) -> Any:
    """bf16 autocast on ``device`` (fp32 master weights, bf16 matmuls), or a no-op."""
    if not autocast:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def update_policy(
    model: Any,
    reference: Any | None,
    batches: Sequence[tuple[TrainBatch, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    algo: AlgoSection,
    *,
    suppressed_ids: Sequence[int],
    temperature: float,
    grad_clip: float,
    total_tokens: int | None = None,
) -> dict[str, float]:
    """``ppo_epochs`` optimiser steps over the micro-batches ``(batch, advantages (b,))``.

    Each micro-batch's token-mean loss is weighted by its share of the step's trained tokens,
    so the accumulated gradient is the token-mean over the whole step. ``total_tokens``: the
    step's trained tokens when ``batches`` hold only part of its rollouts (the others left out
    with an advantage of 0); None: the tokens of ``batches``. Raises ``TrainingDiverged``
    before touching the weights when a loss or the gradient is not finite.
    """
    trained = max(sum(b.trained_tokens for b, _ in batches), 1)
    total_tokens = max(trained if total_tokens is None else total_tokens, 1)
    params = [p for p in model.parameters() if p.requires_grad]
    ref_cache: dict[int, torch.Tensor] = {}
    sums = {"loss/total": 0.0, "loss/policy": 0.0, "loss/kl": 0.0, "loss/clip_fraction": 0.0}
    sums["loss/ratio_mean"] = 0.0
    grad_norm = torch.tensor(0.0)
    for _ in range(algo.ppo_epochs):
        optimizer.zero_grad(set_to_none=True)
        for i, (batch, advantages) in enumerate(batches):
            if reference is not None and algo.kl_beta > 0 and i not in ref_cache:
                with torch.no_grad():
                    ref_cache[i] = token_logprobs(
                        reference, batch, suppressed_ids=suppressed_ids, temperature=temperature
                    )
            logp = token_logprobs(
                model, batch, suppressed_ids=suppressed_ids, temperature=temperature
            )
            loss, stats = grpo_loss(
                logp,
                batch.old_logprobs,
                ref_cache.get(i),
                advantages,
                batch.loss_mask,
                clip_eps=algo.clip_eps,
                kl_beta=algo.kl_beta,
                kl_clamp=algo.kl_clamp,
            )
            if not torch.isfinite(loss):
                raise TrainingDiverged(f"the loss is {loss.item()} (micro-batch {i})")
            weight = stats.trained_tokens / total_tokens
            (loss * weight).backward()  # type: ignore[no-untyped-call]
            # the loss terms as the objective weighs them (rollouts left out count as 0); the
            # ratio and clip diagnostics as means over the tokens actually trained
            share = stats.trained_tokens / trained
            for key, value, w in (
                ("loss/total", stats.loss, weight),
                ("loss/policy", stats.policy_loss, weight),
                ("loss/kl", stats.kl, weight),
                ("loss/clip_fraction", stats.clip_fraction, share),
                ("loss/ratio_mean", stats.ratio_mean, share),
            ):
                sums[key] += value * w / algo.ppo_epochs
        grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
        if not torch.isfinite(grad_norm):
            raise TrainingDiverged(f"the gradient norm is {grad_norm.item()}")
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)  # the rollouts that follow need the memory
    return {**sums, "loss/grad_norm": float(grad_norm), "loss/trained_tokens": float(total_tokens)}


@torch.no_grad()
def recompute_old_logprobs(
    model: Any,
    batches: Sequence[tuple[TrainBatch, torch.Tensor]],
    *,
    suppressed_ids: Sequence[int],
    temperature: float,
) -> list[tuple[TrainBatch, torch.Tensor]]:
    """``batches`` with their old log-probs replaced by one no-grad forward pass of ``model``
    (the trainer's numerics: with one PPO epoch the first ratio is then exactly 1)."""
    out = []
    for batch, advantages in batches:
        old = token_logprobs(model, batch, suppressed_ids=suppressed_ids, temperature=temperature)
        out.append((dataclasses.replace(batch, old_logprobs=old * batch.loss_mask), advantages))
    return out


def by_length(sequences: Sequence[TokenSequence], indices: Sequence[int]) -> list[int]:
    """``indices`` ordered by their sequences' length (stable), so that each micro-batch pads
    to a length near its own: a step mixes direct answers with searched ones two or three
    times as long. The update is the same token-mean over the same rollouts."""
    return sorted(indices, key=lambda i: len(sequences[i].token_ids))


def _micro_batches(
    sequences: Sequence[TokenSequence],
    advantages: torch.Tensor,
    size: int,
    make_batch: Callable[[Sequence[TokenSequence]], TrainBatch],
) -> list[tuple[TrainBatch, torch.Tensor]]:
    return [
        (make_batch(sequences[i : i + size]), advantages[i : i + size])
        for i in range(0, len(sequences), size)
    ]


SavedState = tuple[dict[str, Any], dict[str, torch.Tensor] | None]


def read_checkpoint(checkpoint: Path, model: Any) -> SavedState:
    """``(trainer state, saved weights or None (LoRA))`` of ``checkpoint``, read whole before
    anything is applied: a damaged file raises here and leaves the model as it was."""
    state = load_trainer_state(checkpoint)
    if "adapters" in state:  # LoRA: the base is unchanged, only the adapters were trained
        return state, None
    first = next(model.parameters())
    # through transformers' loader: the file's key names are the checkpoint format's
    saved, _, _ = load_model(checkpoint / "model", dtype=first.dtype, device=first.device)
    return state, saved.state_dict()


def restore_checkpoint(
    checkpoint: Path,
    model: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    saved: SavedState | None = None,
) -> int:
    """Load weights, optimiser, scheduler and RNG states of ``checkpoint`` (``saved``: as
    ``read_checkpoint`` already read them); returns its step."""
    state, weights = saved if saved is not None else read_checkpoint(checkpoint, model)
    if weights is None:
        lora.load_adapter_state(model, state["adapters"])
    else:
        model.load_state_dict(weights)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    restore_rng(state["rng"])
    logger.info("resumed from %s (step %d)", checkpoint, state["step"])
    return int(state["step"])


# --- the loop ---


def train_grpo(
    cfg: GRPOConfig,
    parts: GRPOParts,
    out: Path,
    *,
    resume: bool = False,
    rollout: Rollout | None = None,
) -> dict[str, float]:
    """Run GRPO from step 1 (or after the newest intact checkpoint in ``out`` with ``resume``).

    ``rollout``: who samples (default: built from ``cfg.rollout.backend``). Writes
    ``out/config.yaml``, ``out/metrics.jsonl``, ``out/tensorboard/``,
    ``out/checkpoints/step_N/`` and ``out/samples/step_N/``; returns the last step's metrics.
    Holds ``out`` throughout (``mmsr.run_folder``): a second run on it is refused at once.
    """
    with hold_run_folder(out):
        return _train(cfg, parts, out, resume=resume, rollout=rollout)


def _train(
    cfg: GRPOConfig, parts: GRPOParts, out: Path, *, resume: bool, rollout: Rollout | None
) -> dict[str, float]:
    """``train_grpo`` in the held folder. One function on purpose (longer than our usual 50
    lines): the whole algorithm reads top to bottom, the helpers above are the pure pieces."""
    dump_yaml(cfg, out / "config.yaml")
    set_threads(cfg.run.threads)
    seed_everything(cfg.run.seed)
    algo, model, group = cfg.algo, parts.model, cfg.algo.group_size
    device = next(model.parameters()).device
    rollout = rollout or build_rollout(cfg, model, parts)
    policy, turn_encoder, colocated = rollout.policy, rollout.encoder, rollout.colocated
    recompute = algo.recompute(cfg.rollout.backend)

    def compute() -> Any:
        return compute_context(device, cfg.model.autocast)

    uses_lora = lora.is_lora(model)
    engine = RolloutEngine(
        policy,
        image_search=parts.search.image,
        text_search=parts.search.text,
        encoder=turn_encoder,
        limits=cfg.limits,
        prompts=resolve_prompt_set(cfg.prompts),
    )
    suppressed = sorted(turn_encoder.forbidden_ids)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=cfg.optim.lr,
        betas=cfg.optim.betas,
        weight_decay=cfg.optim.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg.optim, cfg.run.steps))

    def make_batch(chunk: Sequence[TokenSequence]) -> TrainBatch:
        pad = int(parts.tokenizer.pad_token_id)
        return collate(chunk, model, parts.image_processor, pad).to(device)

    # Resume: weights, optimiser, scheduler and RNG states from the newest checkpoint; the
    # data position is a function of the step (prompt_indices), so nothing else is needed.
    # A damaged newest checkpoint (a file cut short) is skipped for the newest intact one.
    ckpt_root, start = out / "checkpoints", 0
    if not resume and latest_checkpoint(ckpt_root) is not None:
        raise ValueError(f"{out} already holds checkpoints: pass --resume, or another --out")
    found = newest_intact(ckpt_root, lambda c: read_checkpoint(c, model)) if resume else None
    if resume and found is None:
        logger.warning("--resume: no checkpoint in %s, starting from step 1", ckpt_root)
    if found is not None:
        start = restore_checkpoint(found[0], model, optimizer, scheduler, saved=found[1])
    if colocated is not None:  # the engine starts from the trainer's (restored) weights
        colocated.load_weights(trainer_weights(model))
    writer = MetricsWriter(
        out, tensorboard=cfg.run.tensorboard, wandb=cfg.run.wandb, config=config_to_dict(cfg)
    )
    writer.truncate_after(start)
    probe_writer = MetricsWriter(out, name="probe.jsonl") if cfg.run.probe_every else None
    probe_samples = [
        parts.samples[i]
        for i in probe_indices(len(parts.samples), cfg.run.seed, cfg.run.probe_prompts)
    ]
    probe_tasks = (
        [RolloutTask(s.id, s.question, sample_image(s)) for s in probe_samples]
        if probe_writer is not None
        else []
    )
    decisions = _decision_reader(cfg, parts, probe_samples) if probe_writer is not None else None

    def probe(step: int) -> dict[str, float]:
        """The greedy policy's figures on the probe's questions, logged as of ``step``."""
        assert probe_writer is not None
        model.eval()
        with compute(), greedy(policy):
            trajectories = engine.run(probe_tasks, [0] * len(probe_tasks))
        rewards = score_all(trajectories, probe_samples, cfg.reward)
        figures = rollout_metrics(trajectories, rewards, [s.category or "" for s in probe_samples])
        keys = ("reward/mean", "reward/accuracy", "search/ratio")
        picked = {k: v for k, v in figures.items() if k in keys or k.startswith("search/ratio/")}
        if decisions is not None:
            with compute():
                picked.update(decisions(model))
        found = {f"probe/{k}": v for k, v in picked.items()}
        probe_writer.write(step, found)
        return found

    if probe_writer is not None:
        probe_writer.truncate_after(start)
        if start == 0:
            probe(0)
    bar = tqdm(total=cfg.run.steps, initial=start, disable=not cfg.run.progress, unit="step")
    metrics: dict[str, float] = {}
    try:
        for step in range(start + 1, cfg.run.steps + 1):
            t_start = time.perf_counter()
            # 1. G rollouts of each of the step's questions, each rollout with its own seed
            picked = [
                parts.samples[i]
                for i in prompt_indices(
                    len(parts.samples), cfg.run.seed, step, algo.prompts_per_step
                )
            ]
            repeated = [s for s in picked for _ in range(group)]  # (P*G,), groups consecutive
            tasks = [RolloutTask(s.id, s.question, sample_image(s)) for s in repeated]
            model.eval()
            with compute():
                trajectories = engine.run(tasks, rollout_seeds(cfg.run.seed, step, len(tasks)))
            if colocated is not None:
                colocated.sleep()  # the update needs the engine's memory
            t_rollout = time.perf_counter()
            # 2. rewards (accuracy × search penalty + format), group advantages
            rewards = score_all(trajectories, repeated, cfg.reward)
            scores = torch.tensor([r.score for r in rewards])  # (P*G,)
            advantages = group_advantages(scores, group, unbiased=algo.unbiased_std)  # (P*G,)
            # 3. the policy update on exactly the sampled ids (old log-probs from sampling, or
            # recomputed by the trainer)
            model.train()
            sequences = [
                TokenSequence(t.token_ids, t.loss_mask, t.logprobs, t.images) for t in trajectories
            ]
            step_tokens = sum(sum(seq.loss_mask[1:]) for seq in sequences)  # as collate counts
            kept = by_length(
                sequences,
                [
                    i
                    for i in range(len(sequences))
                    if not (algo.skip_zero_advantage and float(advantages[i]) == 0.0)
                ],
            )
            batches = _micro_batches(
                [sequences[i] for i in kept],
                advantages[kept].to(device),
                algo.micro_batch_size,
                make_batch,
            )
            try:
                with compute():
                    if recompute:
                        batches = recompute_old_logprobs(
                            model,
                            batches,
                            suppressed_ids=suppressed,
                            temperature=cfg.rollout.temperature,
                        )
                    loss_metrics = update_policy(
                        model,
                        parts.reference,
                        batches,
                        optimizer,
                        algo,
                        suppressed_ids=suppressed,
                        temperature=cfg.rollout.temperature,
                        grad_clip=cfg.optim.grad_clip,
                        total_tokens=step_tokens,
                    )
            except TrainingDiverged as err:
                good = latest_checkpoint(ckpt_root)
                raise TrainingDiverged(
                    f"step {step}: {err}; stopped before updating the weights. Last good "
                    f"checkpoint: {good or 'none (no checkpoint was written yet)'}"
                ) from None
            scheduler.step()
            if colocated is not None:  # the next rollouts sample from the new weights
                colocated.load_weights(trainer_weights(model))
            t_end = time.perf_counter()
            # 4. metrics, samples, checkpoint
            metrics = {
                **rollout_metrics(trajectories, rewards, [s.category or "" for s in repeated]),
                "reward/zero_variance_groups": zero_variance_share(scores, group),
                "loss/trained_rollouts": len(kept) / len(sequences),
                **loss_metrics,
                "optim/lr": float(scheduler.get_last_lr()[0]),
                "perf/step_s": t_end - t_start,
                "perf/rollout_s": t_rollout - t_start,
                "perf/update_s": t_end - t_rollout,
                "perf/rollouts_per_min": 60 * len(tasks) / (t_end - t_start),
            }
            if cfg.run.probe_every and (step % cfg.run.probe_every == 0 or step == cfg.run.steps):
                metrics.update(probe(step))
            writer.write(step, metrics)
            bar.update(1)
            bar.set_postfix(
                reward=f"{metrics['reward/mean']:.3f}", search=f"{metrics['search/ratio']:.2f}"
            )
            if cfg.run.sample_every and step % cfg.run.sample_every == 0:
                dump_samples(
                    trajectories,
                    out / "samples" / f"step_{step:06d}",
                    sample_fields(step, repeated, rewards, advantages.tolist(), group),
                )
            if step == cfg.run.steps or (cfg.run.save_every and step % cfg.run.save_every == 0):
                save_checkpoint(
                    ckpt_root,
                    step,
                    model=model,
                    tokenizer=parts.tokenizer,
                    image_processor=parts.image_processor,
                    trainer_state={
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        **({"adapters": lora.adapter_state(model)} if uses_lora else {}),
                    },
                    keep=cfg.run.keep_checkpoints,
                    # LoRA: the folder holds the merged weights, a plain model for evaluation
                    weights=lora.merged_state_dict(model) if uses_lora else None,
                )
    finally:
        bar.close()
        writer.close()
        if probe_writer is not None:
            probe_writer.close()
    return metrics
