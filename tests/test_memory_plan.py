"""The memory plan of ``mmsr train grpo --dry-run``: exact parameter counts and hand arithmetic.

The parameter counts are checked against the model built on the meta device (no memory, no
weights) for both real shapes; every component of a small plan against sums done by hand.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers

from mmsr.models.shapes import SHAPES
from mmsr.train.grpo_config import load_grpo_config
from mmsr.train.memory import OVERHEAD, Arch, grpo_memory_plan, plan_memory

REPO = Path(__file__).resolve().parents[1]

# H 8, I 16, 2 layers, 2 heads of 4 (1 kv head), vocabulary 10, tied; vision width 4, MLP 6,
# one block, 2-px patches over 2 frames, 2×2 merge into the text width 8
SMALL = {
    "hidden_size": 8,
    "intermediate_size": 16,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "vocab_size": 10,
    "tie_word_embeddings": True,
    "vision_config": {
        "hidden_size": 4,
        "intermediate_size": 6,
        "depth": 1,
        "patch_size": 2,
        "temporal_patch_size": 2,
        "spatial_merge_size": 2,
        "out_hidden_size": 8,
    },
}


def test_parameter_counts_by_hand() -> None:
    arch = Arch.from_config(SMALL)
    # embedding 10·8 = 80; per layer q 8·8+8, k and v 8·4+4 each, o 8·8, MLP 3·8·16, norms
    # 2·8 = 72 + 72 + 64 + 384 + 16 = 608; two layers 1216; final norm 8; tied head 0
    assert arch.text_params() == 80 + 1216 + 8
    # patch embed 3·2·2·2·4 = 96; block: norms 8, qkv 4·12+12, proj 16+4, gate and up 4·6+6
    # each, down 6·4+4 = 176; merger: norm 4, Linear(16, 16) 272, Linear(16, 8) 136 = 412
    assert arch.vision_params() == 96 + 176 + 412
    # LoRA rank 2 per layer: q (8+8), k (8+4), v (8+4), o (8+8), gate, up (8+16), down (16+8)
    assert arch.lora_params(2) == 2 * 2 * (16 + 12 + 12 + 16 + 24 + 24 + 24)
    # K and V, 2 layers, 1 kv head of 4, bf16
    assert arch.kv_bytes_per_token(2) == 2 * 2 * 1 * 4 * 2


@pytest.mark.parametrize(
    ("shape", "expected"), [("qwen2.5-vl-3b", 3_754_622_976), ("qwen2.5-vl-7b", 8_292_166_656)]
)
def test_parameter_counts_match_the_real_architecture(shape: str, expected: int) -> None:
    config = transformers.Qwen2_5_VLConfig(**SHAPES[shape])
    with torch.device("meta"):
        model = transformers.Qwen2_5_VLForConditionalGeneration(config)
    assert sum(p.numel() for p in model.parameters()) == expected  # 3.75 B and 8.29 B
    assert Arch.from_config(SHAPES[shape]).params() == expected
    # the 3B's KV cache: 2 (K, V) × 36 layers × 2 kv heads × 128 × 2 bytes per token
    if shape == "qwen2.5-vl-3b":
        assert Arch.from_config(SHAPES[shape]).kv_bytes_per_token(2) == 36_864


@pytest.mark.parametrize("preset", ["micro", "tiny"])
def test_parameter_counts_of_a_saved_config(preset: str) -> None:
    # transformers 5 nests the text fields under text_config; the count reads both layouts
    import tiny_models

    from mmsr.models import build_tiny_model

    model = build_tiny_model(preset, tiny_models.tokenizer(), seed=0)
    expected = sum(p.numel() for p in model.parameters())
    assert Arch.from_config(model.config.to_dict()).params() == expected


def test_a_small_plan_by_hand() -> None:
    plan = plan_memory(
        Arch.from_config(SMALL),
        weights_dtype="float32",
        autocast=True,
        lora_rank=0,
        reference=True,
        gradient_checkpointing=False,
        rollout_rows=3,
        train_rows=2,
        max_tokens=10,
        images_per_sequence=1,
    )
    params = 1988
    c = plan.components
    assert c["weights"] == c["gradients"] == params * 4  # float32 master weights
    assert c["optimizer"] == 2 * params * 4  # AdamW's two moments
    assert c["reference"] == params * 2  # a bf16 copy
    # 3 rows × 10 tokens × 32 bytes, plus 3 rows × vocabulary 10 × 4 float32 buffers
    assert c["kv_cache"] == 3 * 10 * 32 + 3 * 10 * 16
    # a text layer keeps 8·8 + 2·(2·8 + 5·8 + 4 + 4·16) = 312 bytes a token: 10 × 2 × 312;
    # vision: 10 tokens → 40 patches × 1 block × (8·4 + 2·(2·4 + 5·4 + 4 + 4·6)) = 144;
    # logits: 10 tokens × 10 ids × (2 + 12); all for 2 rows
    assert c["activations"] == 2 * (10 * 2 * 312 + 40 * 144 + 10 * 10 * 14)
    assert c["overhead"] == OVERHEAD
    static = c["weights"] + c["optimizer"] + c["reference"] + OVERHEAD
    assert plan.peak == static + c["gradients"] + c["activations"]  # the update phase is larger


def test_checkpointing_lora_and_the_presets_plans() -> None:
    arch = Arch.from_config(SHAPES["qwen2.5-vl-7b"])
    common = {
        "weights_dtype": "bfloat16",
        "autocast": True,
        "reference": True,
        "rollout_rows": 32,
        "train_rows": 1,
        "max_tokens": 8192,
        "images_per_sequence": 6,
    }
    full = plan_memory(arch, lora_rank=0, gradient_checkpointing=False, **common)
    lora = plan_memory(arch, lora_rank=64, gradient_checkpointing=True, **common)
    assert lora.components["reference"] == 0  # adapters disabled: no second copy
    assert lora.components["optimizer"] == 2 * 4 * arch.lora_params(64)
    # checkpointing keeps one block input per layer; the logits (16 GiB here) stay
    assert lora.components["activations"] < full.components["activations"] / 3
    assert any("round away" in note for note in full.notes)  # pure bf16 AdamW is flagged
    gib = 1024**3
    for name in ("qwen2.5-vl-3b-1gpu", "qwen2.5-vl-7b-1gpu"):
        plan, source = grpo_memory_plan(load_grpo_config(name))
        assert "mmsr.models.shapes" in source  # the checkpoint folder is not here
        assert 40 * gib < plan.peak < 79 * gib  # sized for one 80 GB GPU


def test_a_model_folder_config_is_read(tmp_path: Path) -> None:
    import json

    (tmp_path / "config.json").write_text(
        json.dumps({**SHAPES["qwen2.5-vl-3b"], "vocab_size": 1000})
    )
    cfg = load_grpo_config("qwen2.5-vl-3b-1gpu", ["--model.path", str(tmp_path)])
    plan, source = grpo_memory_plan(cfg)
    assert source.endswith("config.json")
    assert (
        plan.components["weights"]
        < grpo_memory_plan(load_grpo_config("qwen2.5-vl-3b-1gpu"))[0].components["weights"]
    )


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(
        [sys.executable, "-m", "mmsr.cli", "train", "grpo", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        check=False,
    )


@pytest.mark.parametrize("preset", ["qwen2.5-vl-3b-1gpu", "qwen2.5-vl-7b-1gpu"])
def test_dry_run_prints_config_and_plan(preset: str) -> None:
    out = _cli("--preset", preset, "--dry-run")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "model:" in out.stdout and "device: cuda" in out.stdout  # the resolved config
    for component in (
        "weights",
        "gradients",
        "optimizer",
        "reference",
        "kv_cache",
        "activations",
        "peak",
    ):
        assert f"  {component} " in out.stdout
    assert "no CUDA device visible" in out.stdout


def test_a_cuda_run_without_cuda_is_refused(tmp_path: Path) -> None:
    out = _cli("--preset", "qwen2.5-vl-3b-1gpu", "--out", str(tmp_path / "run"))
    assert out.returncode == 2
    assert "CUDA is not available" in out.stderr
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_a_run_that_does_not_fit_the_visible_gpu_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mmsr.train import grpo_cli

    gib = 1024**3
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cfg = load_grpo_config("qwen2.5-vl-3b-1gpu")  # ≈ 75 GiB planned
    monkeypatch.setattr(grpo_cli, "_visible_memory", lambda device: (40 * gib, 48 * gib))
    refusal = grpo_cli.fit_refusal(cfg)
    assert refusal is not None and "exceeds the 40.0 GiB free on cuda" in refusal
    assert "does NOT fit" in grpo_cli.memory_report(cfg)
    monkeypatch.setattr(grpo_cli, "_visible_memory", lambda device: (130 * gib, 139 * gib))
    assert grpo_cli.fit_refusal(cfg) is None
    assert ": fits" in grpo_cli.memory_report(cfg)


def test_vllm_rollouts_add_the_engines_weights_and_its_share_is_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mmsr.train import grpo_cli

    gib = 1024**3
    hf = grpo_memory_plan(load_grpo_config("qwen2.5-vl-7b-1gpu"))[0]
    cfg = load_grpo_config("qwen2.5-vl-7b-1gpu", ["--rollout.backend=vllm"])
    plan = grpo_memory_plan(cfg)[0]
    c = plan.components
    assert "vllm_weights" not in hf.components
    assert c["vllm_weights"] == 2 * 8_292_166_656  # the engine's own bf16 copy
    static = c["weights"] + c["optimizer"] + c["reference"] + c["overhead"]
    rollouts = c["kv_cache"] + c["vllm_weights"]
    assert plan.peak == static + max(rollouts, c["gradients"] + c["activations"])
    assert "vllm_weights" in plan.table() and "rollout.vllm_memory" in plan.table()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    # 0.3 of an 80-GiB GPU (24 GiB) cannot hold the engine's ≈ 29.5 GiB
    monkeypatch.setattr(grpo_cli, "_visible_memory", lambda device: (78 * gib, 80 * gib))
    refusal = grpo_cli.fit_refusal(cfg)
    assert refusal is not None and "rollout.vllm_memory 0.3" in refusal
    roomy = load_grpo_config(
        "qwen2.5-vl-7b-1gpu", ["--rollout.backend=vllm", "--rollout.vllm_memory=0.4"]
    )
    assert grpo_cli.fit_refusal(roomy) is None  # 32 GiB for the engine, 60.5 GiB peak
    # the engine's whole share counts while it is awake: 0.9 of 80 GiB leaves no room
    greedy = load_grpo_config(
        "qwen2.5-vl-7b-1gpu", ["--rollout.backend=vllm", "--rollout.vllm_memory=0.9"]
    )
    assert "exceeds the 78.0 GiB free" in (grpo_cli.fit_refusal(greedy) or "")
