"""The configuration of ``mmsr train grpo``: frozen dataclasses, one section per concern.

Presets are YAML files in ``mmsr/train/presets/grpo/`` (``tiny-cpu``: the laptop run;
``qwen2.5-vl-7b-1gpu``: the paper's values scaled to one GPU). ``load_grpo_config`` applies a
preset and ``--section.field value`` overrides to the defaults below; see ``mmsr.config``. The
``reward`` and ``limits`` sections are the ones every entry point composes
(``mmsr.rollout.settings``); configs saved before them (``algo.search_penalty``,
``rollout.max_turns``, ...) still load. ``prompts`` (``--prompts DIR``) picks the prompt set
the rollouts are rendered with.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from mmsr.config import build, parse_overrides
from mmsr.rewards import RewardConfig
from mmsr.rollout.rules import RolloutLimits
from mmsr.rollout.settings import config_data
from mmsr.train import preset_files

GRPO_LIMITS = RolloutLimits(max_new_tokens=64, max_total_tokens=1536, text_k=3)
"""GRPO's default limits: the token budgets and ``text_k`` sized for the tiny CPU run (every
preset sets them anyway)."""


@dataclass(frozen=True)
class ModelSection:
    path: str | None = None
    """A model folder (``mmsr.models.save_pretrained`` or a real Qwen2.5-VL); None: random."""
    preset: str = "tiny"
    """Tiny model preset built from scratch when ``path`` is None (tests, measurements)."""
    init_seed: int = 0
    """Seed of the random weights when ``path`` is None."""
    vocab_size: int = 2000
    """BPE vocabulary of the tokenizer trained on the world's text when ``path`` is None."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Weights' dtype (float32 with ``autocast``: fp32 master weights, bf16 compute)."""
    device: str = "cpu"
    """Where the model lives: ``cpu``, ``cuda`` or ``cuda:N``."""
    autocast: bool = False
    """Run forward passes under ``torch.autocast`` in bfloat16 (the reference is kept in bf16)."""
    attention: Literal["sdpa", "eager"] = "sdpa"
    """transformers' attention implementation (flash-attn has no wheel here)."""
    gradient_checkpointing: bool = False
    """Recompute each block's activations in the backward pass instead of keeping them."""
    lora_rank: int = 0
    """LoRA adapters of this rank on the language model's linear layers (``peft``, the ``gpu``
    extra); the KL reference is the model with its adapters disabled. 0: full fine-tune."""
    lora_alpha: float = 64.0
    """LoRA's scale numerator (the adapters' output is scaled by alpha / rank)."""
    shape: str = ""
    """The architecture the memory plan assumes when ``path`` holds no config.json (a key of
    ``mmsr.models.shapes.SHAPES``); empty: the tiny ``preset``."""


@dataclass(frozen=True)
class DataSection:
    train: str = "runs/world/train.parquet"
    """Training questions (FVQA-schema parquet, e.g. a world's train.parquet)."""
    limit: int | None = None
    """Use only the first N questions."""


@dataclass(frozen=True)
class SearchSection:
    spec: str = "local:runs/index"
    """The search tools: ``local:INDEX_DIR``, ``http:URL``, ``none`` or a .json/.toml config."""
    cache: str | None = None
    """SQLite file caching search results; None or "none": no cache (config files: their own)."""


@dataclass(frozen=True)
class RolloutSection:
    """Who samples the rollouts and how (the protocol's limits are the ``limits`` section)."""

    temperature: float = 1.0
    """Sampling temperature (the loss uses the same)."""
    micro_batch_size: int = 0
    """Rollouts per forward pass of the hf policy (bounds the KV cache); 0: all of a step's."""
    backend: Literal["hf", "vllm"] = "hf"
    """Who samples the rollouts: the trained model itself (``hf``), or a vLLM engine colocated
    on the same GPU (``vllm``, the ``gpu`` extra; weights pushed after every optimizer step)."""
    vllm_memory: float = 0.3
    """``vllm``: the share of the GPU's memory the engine may take (its weights and KV cache)."""


@dataclass(frozen=True)
class AlgoSection:
    prompts_per_step: int = 4
    """Questions per step (the paper: 512)."""
    group_size: int = 8
    """Rollouts per question, G (the paper: 8)."""
    micro_batch_size: int = 8
    """Rollouts per forward/backward pass; gradients accumulate over the step's rollouts."""
    ppo_epochs: int = 1
    """Passes over each step's rollouts; 1 makes the ratio 1 (old log-probs from sampling)."""
    clip_eps: float = 0.2
    """PPO clip range ε."""
    kl_beta: float = 0.001
    """Weight of the k3 KL to the frozen initial model; 0 skips the reference."""
    kl_clamp: float | None = None
    """Clamp each token's k3 KL to ±this (veRL's ``low_var_kl``: 10); None: no clamp."""
    unbiased_std: bool = False
    """Group std with N − 1 (``torch.std``'s default, as veRL's GRPO does) instead of N."""
    skip_zero_advantage: bool = False
    """Leave rollouts whose advantage is 0 (every rollout of a group whose rewards are all
    equal) out of the update. They carry no policy gradient, so the policy term is unchanged
    (the token mean still divides by all the step's trained tokens); what is lost is their share
    of the KL term, and what is saved is their forward and backward passes (often half the
    update on the laptop, where most groups of a narrow world agree)."""
    recompute_old_logprobs: bool | None = None
    """Take the old log-probs from one no-grad forward pass of the trainer instead of the
    sampler's (vLLM's numerics differ from the trainer's); None: on for the vllm backend."""

    def recompute(self, backend: str) -> bool:
        """Whether old log-probs are recomputed with this rollout ``backend``."""
        if self.recompute_old_logprobs is None:
            return backend == "vllm"
        return self.recompute_old_logprobs


@dataclass(frozen=True)
class OptimSection:
    lr: float = 1e-5
    """Peak learning rate of AdamW."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Largest global gradient norm."""
    warmup_steps: int = 0
    """Linear warm-up from 0 to ``lr``."""
    schedule: Literal["constant", "cosine", "sigmoid"] = "constant"
    """After warm-up: constant; cosine down to ``min_lr_ratio`` × lr at the last step; or the
    original release's flat-then-sigmoid decay to ``min_lr_ratio`` (``mmsr.train.schedule``)."""
    min_lr_ratio: float = 0.1
    """Floor of the cosine and sigmoid schedules, relative to ``lr``."""
    sigmoid_mid_step: int = 60
    """Sigmoid schedule: the step where the LR is halfway down (width: a tenth of it)."""


@dataclass(frozen=True)
class RunSection:
    steps: int = 20
    """Optimiser steps in the run (a resumed run continues up to this)."""
    seed: int = 0
    """Seeds the data order, the rollouts' sampling and torch."""
    save_every: int = 10
    """Checkpoint every N steps (and at the end); 0: only at the end."""
    keep_checkpoints: int = 2
    """Newest checkpoints kept on disk."""
    sample_every: int = 5
    """Write the step's trajectories every N steps; 0: never."""
    probe_every: int = 0
    """Every N steps, and before the first, roll out ``probe_prompts`` fixed training questions
    greedily and log their mean reward, accuracy and search ratios as ``probe/*`` (and in
    ``probe.jsonl``, with step 0 for the starting policy). A step's own reward mixes different
    questions from step to step; the probe follows the same ones. 0: never."""
    probe_prompts: int = 64
    """Questions of the probe (a fixed seeded draw from the training set, so not held out)."""
    threads: int = 0
    """torch CPU threads; 0: every core this process may use."""
    tensorboard: bool = True
    """Write TensorBoard events beside metrics.jsonl."""
    wandb: bool = False
    """Also log to Weights & Biases (when it is installed)."""
    progress: bool = True
    """Show a progress bar."""


@dataclass(frozen=True)
class GRPOConfig:
    model: ModelSection = field(default_factory=ModelSection)
    """The policy to train."""
    data: DataSection = field(default_factory=DataSection)
    """The training questions."""
    search: SearchSection = field(default_factory=SearchSection)
    """The search tools."""
    rollout: RolloutSection = field(default_factory=RolloutSection)
    """The sampling of the rollouts."""
    limits: RolloutLimits = GRPO_LIMITS
    """The protocol's limits and the token budget of every rollout."""
    prompts: str = ""
    """The prompt set the rollouts are rendered with (``mmsr.protocol.prompts.resolve_prompt_set``):
    empty for mmsr's, a prompt-set folder, or ``release-layout:DIR``."""
    algo: AlgoSection = field(default_factory=AlgoSection)
    """GRPO."""
    reward: RewardConfig = RewardConfig()
    """The reward (``reward.mode``: not ``judge``)."""
    optim: OptimSection = field(default_factory=OptimSection)
    """Optimiser and schedule."""
    run: RunSection = field(default_factory=RunSection)
    """Length, seeds, checkpoints, logging."""

    def __post_init__(self) -> None:
        if self.algo.group_size < 2:
            raise ValueError("algo.group_size must be at least 2 (advantages need a group)")
        if self.run.probe_every < 0 or self.run.probe_prompts < 1:
            raise ValueError("run.probe_every must be >= 0 and run.probe_prompts >= 1")
        if min(self.algo.prompts_per_step, self.algo.micro_batch_size, self.run.steps) < 1:
            raise ValueError("prompts_per_step, micro_batch_size and steps must be positive")
        if self.algo.ppo_epochs < 1:
            raise ValueError("algo.ppo_epochs must be at least 1")
        if self.algo.kl_clamp is not None and self.algo.kl_clamp <= 0:
            raise ValueError("algo.kl_clamp must be positive (or null for no clamp)")
        if self.optim.schedule == "sigmoid" and self.optim.sigmoid_mid_step < 1:
            raise ValueError("optim.sigmoid_mid_step must be at least 1")
        if self.model.lora_rank < 0 or self.rollout.micro_batch_size < 0:
            raise ValueError("model.lora_rank and rollout.micro_batch_size must be >= 0")
        if not (math.isfinite(self.rollout.temperature) and self.rollout.temperature >= 0):
            raise ValueError(
                f"rollout.temperature must be at least 0 and finite, got {self.rollout.temperature}"
            )
        if not 0 < self.rollout.vllm_memory < 1:
            raise ValueError("rollout.vllm_memory must be a share of the GPU, in (0, 1)")
        if self.rollout.backend == "vllm" and not self.model.device.startswith("cuda"):
            raise ValueError("rollout.backend vllm needs model.device cuda (vLLM runs on GPUs)")
        if self.reward.mode == "judge":
            raise ValueError("reward.mode 'judge' is not supported in training")


def preset_names() -> list[str]:
    """Names of the packaged presets."""
    return preset_files.preset_names("grpo")


def load_grpo_config(
    preset: str | None = None,
    overrides: Sequence[str] | None = None,
    settings: Mapping[str, Any] | None = None,
) -> GRPOConfig:
    """A preset (a packaged name or a YAML file path), then ``settings`` (a nested mapping:
    ``{"run": {"seed": 3}}``), then ``--section.field value`` overrides, over the defaults."""
    layers = (preset_files.read_preset("grpo", preset), settings or {})
    data = config_data("grpo", *layers, parse_overrides(overrides or []), limits=GRPO_LIMITS)
    return build(GRPOConfig, data)
