"""``bench/gpu_smoke.py``: a run on a shrunken 3B shape on the CPU; its answer without CUDA."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from mmsr.models.shapes import SHAPES

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import gpu_smoke  # noqa: E402


def test_the_smoke_run_on_a_shrunken_shape(tmp_path: Path) -> None:
    # the 3B's vocabulary and vision layout, one thin layer each
    shape = {
        **SHAPES["qwen2.5-vl-3b"],
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "rope_scaling": {"type": "mrope", "mrope_section": [4, 6, 6]},
        "vision_config": {
            **SHAPES["qwen2.5-vl-3b"]["vision_config"],
            "depth": 1,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 64,
            "fullatt_block_indexes": [0],
        },
    }
    from mmsr.train import grpo

    scorer = grpo.score_trajectory
    figures = gpu_smoke.run_smoke(
        shape, "cpu", tmp_path, steps=2, prompts=1, group=2, max_new_tokens=4, image_side=112
    )
    assert figures["steps"] == 2 and len(figures["step_s"]) == 2
    assert figures["rollout_tokens_per_s"] > 0 and figures["loss_finite"]
    assert figures["estimated_peak_gib"] > 0
    assert grpo.score_trajectory is scorer  # the synthetic reward does not leak out


def test_without_cuda_it_says_so() -> None:
    if torch.cuda.is_available():
        return
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu_smoke.py")],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert out.returncode == 2
    assert "no CUDA device" in out.stdout
