"""``mmsr eval --policy vllm:DIR`` and ``hf:DIR`` with a device, a dtype and micro-batches.

vLLM is not installed here: ``vllm:`` runs against the fake engine of ``tests/vllm_fakes.py``
put in place of the ``vllm`` module, which records how the engine was built (the local folder,
prefix caching, the sampled distribution's log-probs, in-process and offline). Without the fake,
asking for ``vllm:`` is a clear error naming the extra. The real engine: ``test_vllm_gpu.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import tiny_models
from vllm_fakes import FakeLLM, FakeSamplingParams

from mmsr.cli import main
from mmsr.eval.loop import TRAJECTORIES
from mmsr.models import build_tiny_model
from mmsr.models.io import load_tokenizer_and_processor, save_pretrained
from mmsr.models.tokenizer import IM_END, IMAGE_PAD, token_id
from mmsr.policy import local_model
from mmsr.policy.registry import policy_from_spec
from mmsr.policy.vllm import VLLMPolicy


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("micro")
    tok = tiny_models.tokenizer()
    model = build_tiny_model("micro", tok, seed=0).eval()
    return save_pretrained(model, tok, tiny_models.image_processor("micro"), folder)


class Engines:
    """A stand-in ``vllm`` module: ``LLM(**kwargs)`` builds a ``FakeLLM`` for the folder."""

    def __init__(self) -> None:
        self.built: list[dict[str, Any]] = []
        self.SamplingParams = FakeSamplingParams

    def LLM(self, **kwargs: Any) -> FakeLLM:  # vllm.LLM
        self.built.append(kwargs)
        tokenizer, processor = load_tokenizer_and_processor(kwargs["model"])
        from mmsr.models import ChatEncoder

        text = ChatEncoder(tokenizer, processor).encode_text("<reason>x</reason><answer>Paris")
        return FakeLLM(
            lambda image: processor(image).num_tokens,
            token_id(tokenizer, IMAGE_PAD),
            [*text, token_id(tokenizer, IM_END)],
        )


@pytest.fixture
def engines(monkeypatch: pytest.MonkeyPatch) -> Engines:
    fake = Engines()
    monkeypatch.setattr(local_model, "import_vllm", lambda: fake)
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")  # restored after the test
    return fake


def test_vllm_spec_builds_an_offline_in_process_engine_on_the_folder(
    model_dir: Path, engines: Engines
) -> None:
    policy, encoder = policy_from_spec(
        f"vllm:{model_dir}", temperature=0.7, dtype="bfloat16", max_model_len=4096
    )
    assert isinstance(policy, VLLMPolicy) and policy.temperature == 0.7
    (kwargs,) = engines.built
    assert kwargs["model"] == kwargs["tokenizer"] == str(model_dir)
    assert kwargs["enable_prefix_caching"] is True and kwargs["dtype"] == "bfloat16"
    assert kwargs["logprobs_mode"] == "processed_logprobs" and kwargs["max_model_len"] == 4096
    assert kwargs["load_format"] == "auto" and kwargs["enable_sleep_mode"] is False
    assert kwargs["limit_mm_per_prompt"] == {"image": 8, "video": 0}
    assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"  # weights by reference
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert encoder.forbidden_ids == policy.suppressed


def test_eval_with_vllm_runs_token_level(
    model_dir: Path, engines: Engines, small_world: tuple[Path, Path], tmp_path: Path
) -> None:
    data = small_world[0] / "test.parquet"
    out = tmp_path / "run"
    args = ["eval", "--policy", f"vllm:{model_dir}", "--method", "on-demand", "--data", str(data)]
    args += ["--search", f"local:{small_world[1]}", "--batch-size", "2"]
    args += ["--out", str(out), "--limit", "3", "--max-new-tokens", "8", "--no-progress"]
    assert main(args) == 0
    lines = [json.loads(x) for x in (out / TRAJECTORIES).read_text().splitlines()]
    assert len(lines) == 3
    assert all(0 < line["n_trained_tokens"] <= 8 * line["n_assistant_turns"] for line in lines)
    assert engines.built[0]["max_model_len"] == 4096  # the protocol's longest rollout
    assert json.loads((out / "metrics.json").read_text())["overall"]["n"] == 3


def test_eval_with_vllm_without_the_extra_is_a_clear_error(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(ImportError, match=r"needs vLLM: pip install -e '\.\[gpu\]'"):
        policy_from_spec(f"vllm:{model_dir}")


def test_hf_spec_takes_device_dtype_and_micro_batches(model_dir: Path) -> None:
    import torch

    policy, _ = policy_from_spec(f"hf:{model_dir}", device="cpu", dtype="bfloat16", max_batch=3)
    assert policy.max_batch == 3
    assert next(policy.model.parameters()).dtype == torch.bfloat16
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            policy_from_spec(f"hf:{model_dir}", device="cuda")


def test_grpo_builds_a_colocated_engine_with_dummy_weights(
    model_dir: Path, engines: Engines
) -> None:
    from mmsr.train.grpo import GRPOParts
    from mmsr.train.grpo_config import load_grpo_config
    from mmsr.train.rollout_backend import build_rollout

    cfg = load_grpo_config(
        "tiny-cpu",
        ["--model.device=cuda", "--rollout.backend=vllm", "--rollout.vllm_memory=0.4"],
    )
    parts = GRPOParts(None, None, None, None, [], None, source=model_dir)  # type: ignore[arg-type]
    rollout = build_rollout(cfg, None, parts)
    assert rollout.colocated is rollout.policy and rollout.policy.sleep_level == 2
    (kwargs,) = engines.built
    assert kwargs["load_format"] == "dummy"  # the trainer pushes its weights before rollouts
    assert kwargs["enable_sleep_mode"] is True and kwargs["gpu_memory_utilization"] == 0.4
    assert kwargs["max_model_len"] == cfg.limits.max_total_tokens
    limit = 1 + cfg.limits.max_image_searches * cfg.limits.image_k  # question + image hits
    assert kwargs["limit_mm_per_prompt"]["image"] == limit
    assert rollout.policy.temperature == cfg.rollout.temperature
    with pytest.raises(ValueError, match="needs the model's folder"):
        build_rollout(cfg, None, GRPOParts(None, None, None, None, [], None))  # type: ignore[arg-type]
