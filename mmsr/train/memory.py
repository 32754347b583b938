"""An estimate of a GRPO run's peak GPU memory, from the model's shapes and the config alone.

``Arch.from_config`` reads the shapes of a Qwen2.5-VL ``config.json`` mapping (a model folder's,
or ``mmsr.models.shapes.SHAPES``); ``plan_memory`` turns them and the run's settings into bytes
per component; ``grpo_memory_plan`` does both for a ``GRPOConfig``. Plain arithmetic: no torch,
no weights, so ``mmsr train grpo --dry-run`` works anywhere. The counts of parameters are exact
(a test compares them with the model built on the meta device); the rest is a model of where
the bytes go, stated term by term below, for the worst case: every sequence as long as
``limits.max_total_tokens``.

The two phases of a step do not overlap: rollouts hold the KV cache (the gradients are freed
after each optimizer step), the update holds gradients and activations. So the peak is
``weights + optimizer + reference + overhead + max(kv_cache, gradients + activations)``.
With vLLM rollouts (``rollout.backend: vllm``) the engine's own bf16 weights
(``vllm_weights``) join its KV cache during rollouts; it sleeps through the update.
What it is not: a measurement (the allocator's fragmentation is a fixed ``overhead``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmsr.config import read_json

GIB = 1024**3
OVERHEAD = 2 * GIB
"""CUDA context, cuBLAS workspaces and allocator slack (a fixed allowance)."""
ASSUMED_TOKENS_PER_IMAGE = 256
"""Visual tokens per image the vision tower's activations are counted for (≈ 448×448 px)."""
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""The language model's linear layers that LoRA adapts (``mmsr.train.lora``)."""


@dataclass(frozen=True)
class Arch:
    """The shapes of a Qwen2.5-VL that memory depends on."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    v_hidden: int
    v_intermediate: int
    v_depth: int
    v_patch: int
    v_temporal: int
    v_merge: int
    v_out: int
    v_in_chans: int = 3

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Arch:
        """From a ``config.json`` mapping (text fields at the top or under ``text_config``)."""
        text = {**config, **config.get("text_config", {})}
        vision = config["vision_config"]
        head_dim = text.get("head_dim") or text["hidden_size"] // text["num_attention_heads"]
        return cls(
            hidden=text["hidden_size"],
            intermediate=text["intermediate_size"],
            layers=text["num_hidden_layers"],
            heads=text["num_attention_heads"],
            kv_heads=text.get("num_key_value_heads", text["num_attention_heads"]),
            head_dim=head_dim,
            vocab=text["vocab_size"],
            tied=bool(config.get("tie_word_embeddings", text.get("tie_word_embeddings", False))),
            v_hidden=vision["hidden_size"],
            v_intermediate=vision["intermediate_size"],
            v_depth=vision["depth"],
            v_patch=vision.get("patch_size", 14),
            v_temporal=vision.get("temporal_patch_size", 2),
            v_merge=vision.get("spatial_merge_size", 2),
            v_out=vision["out_hidden_size"],
            v_in_chans=vision.get("in_chans", vision.get("in_channels", 3)),
        )

    def text_params(self) -> int:
        h, q, kv = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim
        attention = (h * q + q) + 2 * (h * kv + kv) + q * h  # q, k, v with biases; o without
        layer = attention + 3 * h * self.intermediate + 2 * h  # gated MLP, two RMSNorms
        head = 0 if self.tied else self.vocab * h
        return self.vocab * h + self.layers * layer + h + head

    def vision_params(self) -> int:
        h, i = self.v_hidden, self.v_intermediate
        patch_embed = self.v_in_chans * self.v_temporal * self.v_patch**2 * h  # no bias
        block = 2 * h + (3 * h * h + 3 * h) + (h * h + h) + 2 * (h * i + i) + (i * h + h)
        m = h * self.v_merge**2  # the merger: RMSNorm, then Linear(m, m), GELU, Linear(m, out)
        merger = h + (m * m + m) + (m * self.v_out + self.v_out)
        return patch_embed + self.v_depth * block + merger

    def params(self) -> int:
        return self.text_params() + self.vision_params()

    def lora_params(self, rank: int) -> int:
        """Parameters of rank-``rank`` adapters (A: r × in, B: out × r) on ``LORA_TARGETS``."""
        h, i = self.hidden, self.intermediate
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        in_out = [(h, q), (h, kv), (h, kv), (q, h), (h, i), (h, i), (i, h)]
        return self.layers * rank * sum(a + b for a, b in in_out)

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * dtype_bytes


def _count(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 10**8 else f"{n / 1e6:.2f} M"


def layer_activation_bytes(hidden: int, q_dim: int, kv_dim: int, inter: int, c: int) -> int:
    """Bytes one decoder layer keeps for backward per token, compute dtype of ``c`` bytes.

    The two RMSNorms keep their input in float32 (8·H); the q/k/v input (H), the rotated q and k
    (q + kv), sdpa's q, k, v (k and v repeated to q's width) and output (4·q), the MLP's input
    (H) and its gate, up, activation and product (4·I) in the compute dtype.
    """
    return 8 * hidden + c * (2 * hidden + 5 * q_dim + kv_dim + 4 * inter)


@dataclass(frozen=True)
class MemoryPlan:
    """Estimated bytes per component, and the peak."""

    components: dict[str, int]
    notes: tuple[str, ...]

    @property
    def peak(self) -> int:
        c = self.components
        static = c["weights"] + c["optimizer"] + c["reference"] + c["overhead"]
        rollouts = c["kv_cache"] + c.get("vllm_weights", 0)
        return static + max(rollouts, c["gradients"] + c["activations"])

    def table(self) -> str:
        lines = [f"  {name:<12} {size / GIB:8.2f} GiB" for name, size in self.components.items()]
        lines.append(f"  {'peak':<12} {self.peak / GIB:8.2f} GiB")
        engine = " + vllm_weights" if "vllm_weights" in self.components else ""
        lines.append(
            "  (peak = weights + optimizer + reference + overhead + the larger of kv_cache"
            f"{engine} (rollouts) and gradients + activations (update))"
        )
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


def plan_memory(
    arch: Arch,
    *,
    weights_dtype: str,
    autocast: bool,
    lora_rank: int,
    reference: bool,
    gradient_checkpointing: bool,
    rollout_rows: int,
    train_rows: int,
    max_tokens: int,
    images_per_sequence: int,
    vllm: bool = False,
) -> MemoryPlan:
    """Bytes per component of a GRPO step (see the module docstring for the phases); ``vllm``:
    the rollouts run on a colocated vLLM engine (bf16 weights and KV cache of its own)."""
    w = 4 if weights_dtype == "float32" else 2
    c = 2 if (autocast or w == 2) else 4  # compute dtype
    base, lora = arch.params(), arch.lora_params(lora_rank) if lora_rank else 0
    trainable, t_bytes = (lora, 4) if lora_rank else (base, w)  # adapters are kept in float32
    notes = [f"{_count(base)} parameters, {_count(trainable)} trained"]
    if lora_rank == 0 and w == 2:
        notes.append("bf16 weights with a full fine-tune: AdamW updates at lr ~1e-6 round away")
    h, q, kv = arch.hidden, arch.heads * arch.head_dim, arch.kv_heads * arch.head_dim
    per_layer = layer_activation_bytes(h, q, kv, arch.intermediate, c)
    patches = min(images_per_sequence * ASSUMED_TOKENS_PER_IMAGE, max_tokens) * arch.v_merge**2
    v_layer = layer_activation_bytes(
        arch.v_hidden, arch.v_hidden, arch.v_hidden, arch.v_intermediate, c
    )
    if gradient_checkpointing:  # each block's input is kept; one block is recomputed at a time
        text_acts = max_tokens * (arch.layers * h * c + per_layer)
        vision_acts = patches * (arch.v_depth * arch.v_hidden * c + v_layer)
    else:
        text_acts, vision_acts = (
            max_tokens * arch.layers * per_layer,
            patches * arch.v_depth * v_layer,
        )
    # logits of the trained span: the model's (c bytes), float32, suppressed, log-softmax
    logits = max_tokens * arch.vocab * (c + 12)
    sampling = rollout_rows * arch.vocab * 4 * 4  # float logits, log-probs, probs, noise
    notes.append(
        f"worst case: every sequence {max_tokens} tokens, {images_per_sequence} images of "
        f"<= {ASSUMED_TOKENS_PER_IMAGE} visual tokens"
    )
    components = {
        "weights": base * w + lora * 4,
        "gradients": trainable * t_bytes,
        "optimizer": 2 * trainable * t_bytes,  # AdamW's two moments, in the parameters' dtype
        "reference": 0 if (lora_rank or not reference) else base * c,
        "kv_cache": rollout_rows * max_tokens * arch.kv_bytes_per_token(c) + sampling,
        "activations": train_rows * (text_acts + vision_acts + logits),
        "overhead": OVERHEAD,
    }
    if vllm:
        components["kv_cache"] = rollout_rows * max_tokens * arch.kv_bytes_per_token(2) + sampling
        components["vllm_weights"] = base * 2
        notes.append(
            "vllm: the engine takes rollout.vllm_memory x the GPU's memory, which must hold "
            "vllm_weights + kv_cache (rollout.micro_batch_size sequences at full length)"
        )
    return MemoryPlan(components, tuple(notes))


def read_arch(model_path: str | None, shape: str) -> tuple[Arch, str]:
    """The architecture a run will train, and where it came from.

    ``model_path/config.json`` when it exists; else the named shape (``SHAPES`` or ``tiny``).
    """
    if model_path and (Path(model_path) / "config.json").is_file():
        config = read_json(Path(model_path) / "config.json")
        return Arch.from_config(config), f"{model_path}/config.json"
    from mmsr.models.shapes import SHAPES

    if shape not in SHAPES:
        known = ", ".join(sorted(SHAPES))
        raise ValueError(f"model.shape {shape!r} is not a known shape ({known})")
    return Arch.from_config(SHAPES[shape]), f"the {shape} shape (mmsr.models.shapes)"


def grpo_memory_plan(cfg: Any) -> tuple[MemoryPlan, str]:
    """``plan_memory`` for a ``GRPOConfig``; also returns where the shapes came from."""
    if cfg.model.path is None and cfg.model.shape == "":
        arch, source = tiny_arch(cfg.model.preset, cfg.model.vocab_size), "the tiny preset"
    else:
        arch, source = read_arch(cfg.model.path, cfg.model.shape)
    rollouts = cfg.algo.prompts_per_step * cfg.algo.group_size
    plan = plan_memory(
        arch,
        weights_dtype=cfg.model.dtype,
        autocast=cfg.model.autocast,
        lora_rank=cfg.model.lora_rank,
        reference=cfg.algo.kl_beta > 0,
        gradient_checkpointing=cfg.model.gradient_checkpointing,
        rollout_rows=min(cfg.rollout.micro_batch_size or rollouts, rollouts),
        train_rows=cfg.algo.micro_batch_size,
        max_tokens=cfg.limits.max_total_tokens,
        images_per_sequence=1 + cfg.limits.image_k * cfg.limits.max_image_searches,
        vllm=cfg.rollout.backend == "vllm",
    )
    return plan, source


def tiny_arch(preset: str, vocab_size: int) -> Arch:
    """A tiny preset's shapes (``vocab_size`` before the world's atomic tokens are added)."""
    from mmsr.models.config import PRESETS

    p = PRESETS[preset]
    return Arch(
        hidden=p.hidden_size,
        intermediate=p.intermediate_size,
        layers=p.num_layers,
        heads=p.num_heads,
        kv_heads=p.num_kv_heads,
        head_dim=p.hidden_size // p.num_heads,
        vocab=vocab_size,
        tied=p.tie_word_embeddings,
        v_hidden=p.vision_hidden_size,
        v_intermediate=p.vision_intermediate_size,
        v_depth=p.vision_depth,
        v_patch=p.patch_size,
        v_temporal=2,
        v_merge=p.merge_size,
        v_out=p.hidden_size,
    )
