"""Supervised warm start of the tiny policy on teacher conversations.

``train_sft(config, world, index, out)`` trains a tokenizer on the world's text (every entity
name and answer value one atomic token, from ``vocab.json``), builds the tiny model from its
preset, and trains it on conversations drawn by ``mmsr.teacher.draw.Teacher`` with the loss on
assistant tokens only (``teacher_sequence`` masks; mean over trained tokens). AdamW, gradient
clipping, linear warmup then cosine decay over the budget (steps, minutes of training time, or
whichever ends first), gradient accumulation. Every ``eval_every_minutes`` it rolls out a few
held-out world questions greedily with the real engine and local search and logs the format
rate, accuracy and search ratio. At the end the weights are saved in bf16 (``load_model``
reads them back as float32) with the resolved config beside them.

With a minutes budget the number of steps depends on the machine's speed, so only a steps
budget is exactly reproducible; the seed fixes the data stream and the initial weights.
Presets are YAML files in ``mmsr/train/presets/sft/`` (``tiny-cpu``: the laptop warm start;
``smoke``: seconds, for tests), loaded by ``load_sft_config`` like GRPO's.
Not here: the conversations (``mmsr.teacher``), the evaluation loop itself (``sft_check``).
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm
from transformers import PreTrainedTokenizerBase

from mmsr.config import build, config_to_dict, parse_overrides
from mmsr.models import (
    PRESETS,
    ChatEncoder,
    ImageProcessor,
    added_atomic_ids,
    build_tiny_model,
    count_parameters,
    load_model,
    save_pretrained,
    suppressed_token_ids,
    token_id,
    train_tokenizer,
)
from mmsr.models.tokenizer import ENDOFTEXT
from mmsr.models.vision_batch import model_inputs
from mmsr.protocol import default_prompt_set
from mmsr.protocol.prompts import resolve_prompt_set
from mmsr.rewards import RewardConfig
from mmsr.rollout.rules import RolloutLimits
from mmsr.rollout.settings import config_data
from mmsr.teacher.draw import SHORT_KINDS, Teacher, TeacherConfig
from mmsr.teacher.turns import UNKNOWN_IMAGE, UNKNOWN_THING
from mmsr.teacher.world_kit import WorldKit
from mmsr.train import preset_files, resume
from mmsr.train.atomic import freeze_rows, param_groups, set_random_codes
from mmsr.train.batch import collate, teacher_sequence
from mmsr.train.schedule import lr_multiplier
from mmsr.train.sft_check import SFT_EVAL_LIMITS, EvalConfig, evaluate_model, pick_questions
from mmsr.types import Role

logger = logging.getLogger(__name__)

CONFIG_FILE = "sft_config.json"
METRICS_FILE = "sft_metrics.json"
ROLLOUTS_FILE = "sft_eval_rollouts.jsonl"


@dataclass(frozen=True)
class SFTConfig:
    """Everything a warm-start run depends on (saved beside the checkpoint)."""

    model_preset: str = "tiny"
    """Model size preset of ``mmsr.models.PRESETS``."""
    init_from: str = ""
    """A saved model folder to continue from (its tokenizer is kept); empty: a fresh model."""
    vocab_size: int = 6000
    """BPE vocabulary before the atomic tokens are added."""
    seed: int = 0
    """Seeds the initial weights and the teacher's data stream."""
    device: str = "cpu"
    """Where the model trains: ``cpu``, ``cuda`` or ``cuda:N``."""
    lr: float = 5e-4
    """Peak learning rate (at 2e-3 the copying never set in; at 5e-4 within 250 primer steps)."""
    min_lr_ratio: float = 0.1
    """The cosine decays to this share of the peak."""
    warmup_steps: int = 20
    """Linear warmup steps."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    vision_lr_scale: float = 1.0
    """The vision tower's learning rate as a share of ``lr`` (below 1 keeps a tower pretrained
    by ``mmsr train vision`` close to what it learnt while the language model adapts)."""
    decision_weight: float = 1.0
    """Loss weight of the token that fills the picture's slot ("The image shows ▢": a known
    entity's name or ``turns.UNKNOWN_THING``, i.e. the search decision) against 1 for every
    other trained token (``decision_slot_weights``). 1: plain token mean."""
    grad_clip: float = 1.0
    """Largest global gradient norm."""
    batch_size: int = 4
    """Conversations per micro-batch (all of one teacher kind, so lengths are similar)."""
    primer_steps: int = 600
    """The first optimizer steps draw only the short primer kinds (``teacher.PRIMER_KINDS``)."""
    primer_batch_size: int = 32
    """Conversations per micro-batch of a primer kind (they are short)."""
    atomic_std: float = 0.12
    """Std of the fixed random codes of the atomic tokens (``mmsr.train.atomic``); 0: keep."""
    atomic_shared: float = 1.0
    """Length of the direction all atomic codes share (``atomic.set_random_codes``)."""
    freeze_atomic: bool = True
    """Keep the atomic tokens' embedding rows fixed (``mmsr.train.atomic``)."""
    accumulation: int = 1
    """Micro-batches per optimizer step."""
    max_steps: int = 0
    """Optimizer steps budget (0: none)."""
    minutes: float = 45.0
    """Training-time budget in minutes, evaluation excluded (0: none)."""
    eval_every_minutes: float = 15.0
    """Minutes of training between evaluations (0: only at the end)."""
    checkpoint_every: int = 0
    """Steps between resume states (``OUT/.resume``: a cut run started again with the same
    settings continues where the last one was written, on the same batches); 0: none."""
    final_questions: int = 0
    """Questions of the final evaluation of the saved weights (0: the whole split)."""
    validation_questions: int = 0
    """Train questions held out of the teacher's pool (seeded by the world's seed,
    ``WorldKit.split_validation``): with ``eval_split="validation"`` the evaluations run on
    them, so a warm start is checked without the test split."""
    eval: EvalConfig = field(default_factory=lambda: EvalConfig(questions=16))
    """The periodic evaluation."""
    limits: RolloutLimits = SFT_EVAL_LIMITS
    """The protocol's limits of the evaluation rollouts."""
    reward: RewardConfig = RewardConfig()
    """The reward the evaluations report."""
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    """The teacher's mixture."""
    prompts: str = ""
    """The prompt set the teacher's conversations are rendered with
    (``mmsr.protocol.prompts.resolve_prompt_set``): empty for mmsr's, a folder, or
    ``release-layout:DIR``. The periodic evaluation keeps mmsr's."""

    def __post_init__(self) -> None:
        if self.max_steps <= 0 and self.minutes <= 0:
            raise ValueError("set a budget: max_steps or minutes")
        if self.model_preset not in PRESETS:
            raise ValueError(f"unknown model preset {self.model_preset!r}")


def world_texts(world: Path) -> Iterator[str]:
    """The text a tokenizer of the world learns from: pages, questions, protocol, teacher."""
    with (world / "corpus" / "pages.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            yield f"{row['title']}. {row['text']}"
    prompts = default_prompt_set()
    from mmsr.world.questions import TEMPLATES

    protocol = [prompts.first_turn, prompts.after_image_search, prompts.after_text_search]
    protocol += [text for t in TEMPLATES for text in t.texts]
    protocol += ["The results show X. I need its capital.", "The results say the", "Question: "]
    for _ in range(20):  # weigh the protocol's words as a model will see them
        yield from protocol


def build_tokenizer(world: Path, vocab_size: int) -> PreTrainedTokenizerBase:
    atomic = json.loads((world / "vocab.json").read_text(encoding="utf-8"))
    return train_tokenizer(world_texts(world), vocab_size=vocab_size, atomic_tokens=atomic)


def budget_progress(step: int, train_seconds: float, config: SFTConfig) -> float:
    """Share of the budget used: the larger of the steps share and the minutes share."""
    shares = []
    if config.max_steps > 0:
        shares.append(step / config.max_steps)
    if config.minutes > 0:
        shares.append(train_seconds / (60.0 * config.minutes))
    return max(shares)


def masked_logprobs(model: Any, batch: Any, suppressed: list[int]) -> torch.Tensor:
    """(N,) log-probs of the N trained next tokens: ``token_logprobs`` at ``loss_mask == 1``.

    The output head and the softmax run on the trained positions only (a few dozen per
    conversation out of hundreds), which is most of a step's cost on CPU otherwise.
    """
    hidden = model.model(
        **model_inputs(model, batch.input_ids, batch.pixel_values, batch.image_grid_thw),
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
    )[0][:, :-1]  # (B, T-1, H): the states that predict input_ids[:, 1:]
    where = batch.loss_mask.bool()  # (B, T-1)
    logits = model.lm_head(hidden[where]).float()  # (N, V)
    if suppressed:
        logits = logits.index_fill(
            -1, torch.tensor(suppressed, device=logits.device), float("-inf")
        )
    targets = batch.input_ids[:, 1:][where]  # (N,)
    return torch.log_softmax(logits, dim=-1).gather(-1, targets[:, None]).squeeze(-1)


def sft_loss(model: Any, batch: Any, suppressed: list[int]) -> torch.Tensor:
    """Mean negative log-likelihood over the batch's trained (assistant) tokens."""
    return -masked_logprobs(model, batch, suppressed).mean()


def slot_prefix_ids(tokenizer: Any) -> tuple[int, int]:
    """The two tokens just before the picture's slot in the teacher's replies ("… image
    shows"), as the tokenizer writes them after ``<reason>The``."""
    ids = tokenizer.encode(f"<reason>{UNKNOWN_IMAGE.split(UNKNOWN_THING)[0].rstrip()}")
    if len(ids) < 2:
        raise ValueError("the tokenizer writes the slot's prefix in fewer than two tokens")
    return int(ids[-2]), int(ids[-1])


def decision_slot_weights(batch: Any, prefix: tuple[int, int], weight: float) -> torch.Tensor:
    """(N,) loss weights aligned with ``masked_logprobs``: ``weight`` on a trained token whose
    two tokens before are ``prefix`` (the slot where the reply names the picture or says it
    knows nothing of it — the token that decides between answering and searching), 1 elsewhere.

    Every other token still weighs 1, so the slot's gradient is raised, not the rest's lowered.
    """
    ids = batch.input_ids
    slot = torch.zeros_like(batch.loss_mask, dtype=torch.bool)  # (B, T-1), aligned with targets
    if ids.shape[1] >= 3:
        # target position t predicts ids[:, t+1]; it is a slot when ids[:, t-1:t+1] == prefix
        slot[:, 1:] = (ids[:, :-2] == prefix[0]) & (ids[:, 1:-1] == prefix[1])
    where = batch.loss_mask.bool()
    return 1.0 + (weight - 1.0) * slot[where].to(torch.float32)


@dataclass
class _Run:
    """The pieces of one run the loop and its evaluation share."""

    config: SFTConfig
    kit: WorldKit
    tokenizer: Any
    processor: ImageProcessor
    model: Any
    eval_samples: list[Any]
    final_samples: list[Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    last_rows: list[dict[str, Any]] = field(default_factory=list)

    def evaluate(self, step: int, minutes: float, *, final: bool = False) -> dict[str, Any]:
        metrics, self.last_rows = evaluate_model(
            self.model,
            self.tokenizer,
            self.processor,
            self.final_samples if final else self.eval_samples,
            image_search=self.kit.image_search,
            text_search=self.kit.text_search,
            config=self.config.eval,
            limits=self.config.limits,
            reward=self.config.reward,
        )
        record = {"step": step, "train_minutes": round(minutes, 2), **metrics}
        self.history.append(record)
        logger.info("eval at step %d: %s", step, json.dumps(metrics))
        return record


def _setup(config: SFTConfig, world: Path, index: Path, eval_split: str) -> _Run:
    from mmsr.data import load_samples

    torch.manual_seed(config.seed)
    random.seed(config.seed)
    kit = WorldKit.open(world, index, validation=config.validation_questions)
    if config.init_from:
        model, tokenizer, processor = load_model(config.init_from)
        model.train(True)
    else:
        tokenizer = build_tokenizer(world, config.vocab_size)
        model = build_tiny_model(config.model_preset, tokenizer, seed=config.seed)
        processor = ImageProcessor(PRESETS[config.model_preset].image_processor_config())
        if config.atomic_std > 0:
            set_random_codes(
                model,
                added_atomic_ids(tokenizer),
                config.atomic_std,
                config.seed,
                shared=config.atomic_shared,
            )
    # transformers types ``to`` through a decorator that mypy reads wrongly (as in mmsr.models.io)
    model = model.to(torch.device(config.device))  # type: ignore[arg-type]
    if config.freeze_atomic:
        freeze_rows(model, added_atomic_ids(tokenizer))
    logger.info("model %s: %d parameters", config.model_preset, count_parameters(model))
    if eval_split == "validation":
        if not kit.validation:
            raise ValueError("eval_split 'validation' needs validation_questions > 0")
        held_out = kit.validation
    else:
        held_out = load_samples(world / f"{eval_split}.parquet")
    eval_samples = pick_questions(held_out, config.eval.questions, config.seed)
    final_samples = pick_questions(held_out, config.final_questions, config.seed)
    return _Run(config, kit, tokenizer, processor, model, eval_samples, final_samples)


def train_sft(
    config: SFTConfig,
    world: str | Path,
    index: str | Path,
    out: str | Path,
    *,
    eval_split: str = "test",
    progress: bool = False,
) -> dict[str, Any]:
    """Train, evaluate periodically, save to ``out``; returns the final record."""
    prompts = resolve_prompt_set(config.prompts)  # a missing prompt file fails before the model
    run = _setup(config, Path(world), Path(index), eval_split)
    model, tokenizer = run.model, run.tokenizer
    encoder = ChatEncoder(tokenizer, run.processor)
    teacher = Teacher(run.kit, config.teacher, seed=config.seed, prompts=prompts)
    suppressed = suppressed_token_ids(tokenizer)
    pad_id = token_id(tokenizer, ENDOFTEXT)
    slot_prefix = slot_prefix_ids(tokenizer)
    optimizer = torch.optim.AdamW(
        param_groups(model, config.weight_decay, config.vision_lr_scale),
        lr=config.lr,
        betas=(0.9, 0.95),
    )
    model.train(True)
    saved_config = config_to_dict(config)
    step, train_seconds, next_eval, smooth = 0, 0.0, config.eval_every_minutes, 0.0
    copy_nll: dict[str, float] = {}  # smoothed NLL of the atomic targets (names, values) per kind
    state = resume.load(Path(out), saved_config, config_to_dict(SFTConfig()))
    if state is not None:  # a cut run of these very settings: continue on the same batches
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        resume.restore_random(state)
        teacher.context.rng.setstate(state["teacher_rng"])
        teacher.context.draws, teacher.skipped = state["teacher_counts"]
        step, train_seconds, next_eval, smooth = state["loop"]
        copy_nll, run.history[:] = state["copy_nll"], json.loads(state["history"])
        logger.info("resumed %s at step %d", out, step)
    device = next(model.parameters()).device
    atomic = torch.zeros(len(tokenizer), dtype=torch.bool, device=device)
    atomic[added_atomic_ids(tokenizer)] = True

    def snapshot() -> dict[str, Any]:
        """What a cut run needs to continue on the same batches."""
        return {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            **resume.random_states(),
            "teacher_rng": teacher.context.rng.getstate(),
            "teacher_counts": (teacher.context.draws, teacher.skipped),
            "loop": (step, train_seconds, next_eval, smooth),
            "copy_nll": dict(copy_nll),
            "history": json.dumps(run.history),
        }

    bar = tqdm(total=None, initial=step, desc="sft", unit="step", disable=not progress)
    while budget_progress(step, train_seconds, config) < 1.0:
        start = time.perf_counter()
        factor = lr_multiplier(  # the warm-up ramp scales the cosine down to min_lr_ratio
            step,
            budget_progress(step, train_seconds, config),
            warmup_steps=config.warmup_steps,
            min_ratio=config.min_lr_ratio,
            warmup_scales_decay=True,
        )
        for group in optimizer.param_groups:
            group["lr"] = config.lr * factor * group.get("lr_scale", 1.0)
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for _ in range(config.accumulation):
            priming = step < config.primer_steps
            kind = teacher.primer_kind(step / config.primer_steps) if priming else teacher.kind()
            size = config.primer_batch_size if kind in SHORT_KINDS else config.batch_size
            seqs = [teacher_sequence(encoder, teacher.draw(kind)) for _ in range(size)]
            batch = collate(seqs, model, run.processor, pad_id).to(device)
            logprobs = masked_logprobs(model, batch, suppressed)
            if config.decision_weight != 1.0:
                weights = decision_slot_weights(batch, slot_prefix, config.decision_weight)
                loss = -(logprobs * weights.to(logprobs.device)).mean() / config.accumulation
            else:
                loss = -logprobs.mean() / config.accumulation
            on_atomic = atomic[batch.input_ids[:, 1:][batch.loss_mask.bool()]]
            if bool(on_atomic.any()):
                nll = float(-logprobs.detach()[on_atomic].mean())
                copy_nll[kind] = 0.9 * copy_nll.get(kind, nll) + 0.1 * nll
            loss.backward()  # type: ignore[no-untyped-call]
            total += float(loss.detach())
        if not math.isfinite(total):
            raise FloatingPointError(f"SFT loss became {total} at step {step}")
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        step += 1
        train_seconds += time.perf_counter() - start
        smooth = total if step == 1 else 0.95 * smooth + 0.05 * total
        bar.update(1)
        bar.set_postfix(
            loss=f"{smooth:.3f}",
            lr=f"{config.lr * factor:.1e}",
            kind=kind,
            names=f"{copy_nll.get(kind, float('nan')):.2f}",
        )
        if next_eval > 0 and train_seconds >= 60.0 * next_eval:
            record = run.evaluate(step, train_seconds / 60.0)
            bar.write(_eval_line(record))
            next_eval += config.eval_every_minutes
        if config.checkpoint_every > 0 and step % config.checkpoint_every == 0:
            resume.save(Path(out), saved_config, snapshot())
    bar.close()
    if config.checkpoint_every > 0 and step % config.checkpoint_every != 0:
        resume.save(Path(out), saved_config, snapshot())  # a cut final evaluation trains no more
    _save(run, Path(out))  # leaves the model with the saved (bf16-rounded) weights
    logger.info("final evaluation on %d questions", len(run.final_samples))
    final = run.evaluate(step, train_seconds / 60.0, final=True)
    final.update(loss=smooth, teacher_skipped=teacher.skipped, eval_split=eval_split)
    final["atomic_target_nll"] = {k: round(v, 3) for k, v in sorted(copy_nll.items())}
    metrics = {"final": final, "history": run.history[:-1]}
    (Path(out) / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    with (Path(out) / ROLLOUTS_FILE).open("w", encoding="utf-8") as handle:
        for row in run.last_rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    resume.discard(Path(out))  # only now: a run cut in its final evaluation resumes after training
    return final


def _eval_line(record: dict[str, Any]) -> str:
    parts = [f"step {record['step']}"]
    for name in ("all", "search_free", "search_required"):
        if name in record:
            m = record[name]
            acc, fmt, search = m["accuracy"], m["format"], m["search_ratio"]
            parts.append(f"{name}: acc {acc:.2f} fmt {fmt:.2f} search {search:.2f}")
    return " | ".join(parts)


def _save(run: _Run, out: Path) -> None:
    """bf16 weights (half the bytes; ``load_model`` casts back) and the resolved config."""
    model = run.model.to(torch.bfloat16)
    save_pretrained(model, run.tokenizer, run.processor, out)
    run.model = model.to(torch.float32)
    (out / CONFIG_FILE).write_text(json.dumps(config_to_dict(run.config), indent=2) + "\n")


def load_sft_config(
    preset: str | None = "tiny-cpu",
    settings: dict[str, Any] | None = None,
    overrides: Sequence[str] = (),
) -> SFTConfig:
    """A preset (a packaged name of ``presets/sft`` or a YAML file), then ``settings`` (a
    nested mapping: ``{"teacher": {"head_direct": 0.9}}``), then ``--section.field value``
    overrides, over the defaults above; unknown keys are errors (``mmsr.config``). The old
    ``eval.max_new_tokens`` is read as ``limits.max_new_tokens`` (``mmsr.rollout.settings``)."""
    layers = (preset_files.read_preset("sft", preset), settings or {}, parse_overrides(overrides))
    return build(SFTConfig, config_data("sft", *layers, limits=SFT_EVAL_LIMITS))


def assistant_share(turns: list[Any]) -> float:
    """Share of a conversation's turns written by the assistant (a sanity figure for logs)."""
    return sum(t.role is Role.ASSISTANT for t in turns) / max(1, len(turns))
