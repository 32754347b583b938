"""The trainer's device options on the CPU, and on CUDA behind the ``gpu`` marker.

On the CPU: bf16 autocast, gradient checkpointing, eager attention and rollout micro-batches
build and train (finite loss, changed weights), and a CUDA device that is not there is a clear
error. With a GPU (``pytest -m gpu``): every tensor the policy feeds the model is on the
model's device, the log-probs recorded while sampling on CUDA are reproduced by a forward pass
over the finished sequence, and a GRPO step runs there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import tiny_models
import torch
from test_grpo_train import OVERRIDES, Tools, _samples
from test_grpo_train import synthetic_reward as synthetic_reward  # the fixture

from mmsr.models import build_tiny_model, save_pretrained
from mmsr.search.base import SearchBackends
from mmsr.train.grpo import GRPOParts, train_grpo
from mmsr.train.grpo_config import ModelSection, load_grpo_config
from mmsr.train.grpo_setup import check_device, load_policy

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    tok = tiny_models.tokenizer()
    model = build_tiny_model("micro", tok, seed=0)
    return save_pretrained(model, tok, tiny_models.image_processor("micro"), tmp_path / "base")


def _train(
    folder: Path, out: Path, section: ModelSection, *extra: str
) -> tuple[Any, dict[str, float]]:
    model, reference, tokenizer, processor = load_policy(folder, section, True)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    parts = GRPOParts(
        model,
        reference,
        tokenizer,
        processor,
        _samples(),
        SearchBackends(image=Tools(), text=Tools()),
    )  # type: ignore[arg-type]
    overrides = [*OVERRIDES, "--run.steps=1", f"--model.device={section.device}", *extra]
    if section.autocast:
        overrides.append("--model.autocast=true")
    metrics = train_grpo(load_grpo_config("tiny-cpu", overrides), parts, out)
    assert torch.isfinite(torch.tensor(metrics["loss/total"]))
    changed = [n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert changed
    return model, metrics


def test_autocast_checkpointing_eager_and_rollout_micro_batches_on_cpu(
    folder: Path, tmp_path: Path, synthetic_reward: None
) -> None:
    section = ModelSection(autocast=True, gradient_checkpointing=True, attention="eager")
    model, reference, _, _ = load_policy(folder, section, True)
    assert model.is_gradient_checkpointing and model.config._attn_implementation == "eager"
    assert next(model.parameters()).dtype == torch.float32  # master weights
    assert next(reference.parameters()).dtype == torch.bfloat16  # the reference: bf16
    _train(folder, tmp_path / "run", section, "--rollout.micro_batch_size=2")


def test_a_missing_cuda_device_is_a_clear_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="CUDA is not available"):
        check_device("cuda")
    with pytest.raises(ValueError, match="only cpu and cuda"):
        check_device("mps")
    check_device("cpu")


# --- on a GPU ---


def _placement_and_replay(device: str) -> None:
    """The policy feeds the model tensors on ``device`` only; batched and alone agree; a CPU
    forward pass over each finished sequence reproduces the recorded log-probs."""
    from test_hf_policy import SPECIAL, Vision, _image, _replay_logprobs, micro_model

    from mmsr.policy import GenerationRequest
    from mmsr.policy.hf import HFPolicy

    model = micro_model().to(device)
    seen: list[torch.device] = []
    original = model.forward

    def recording(*args: Any, **kwargs: Any) -> Any:
        seen.extend(v.device for v in kwargs.values() if isinstance(v, torch.Tensor))
        return original(*args, **kwargs)

    model.forward = recording
    # the sampler off the CPU (gumbel), and here too, so that this check runs everywhere
    policy = HFPolicy(model, Vision(), lambda ids: "", SPECIAL, temperature=1.0, sampler="gumbel")
    vision = (62, *[60] * 4, 63)
    requests = [
        GenerationRequest((), (9, *vision, 10), (_image("red"),), 12, seed=s) for s in (1, 2)
    ]
    requests.append(GenerationRequest((), (20, 21), (), 12, seed=3))
    together = policy.generate(requests)
    model.forward = original
    assert seen and all(d.type == torch.device(device).type for d in seen)
    alone = [policy.generate([r])[0] for r in requests]
    assert [g.token_ids for g in together] == [g.token_ids for g in alone]  # per-row seeds
    cpu_model = model.to("cpu")
    for r, gen in zip(requests, together, strict=True):
        replay = _replay_logprobs(cpu_model, [*r.prompt_ids, *gen.token_ids], r.images, 1.0)
        torch.testing.assert_close(
            replay[-len(gen.token_ids) :], torch.tensor(gen.logprobs), atol=1e-3, rtol=1e-3
        )


def test_placement_and_replay_on_cpu() -> None:
    _placement_and_replay("cpu")


@pytest.mark.gpu
@cuda
def test_policy_tensors_live_on_cuda_and_logprobs_reproduce() -> None:
    _placement_and_replay("cuda")


@pytest.mark.gpu
@cuda
def test_a_grpo_step_on_cuda(folder: Path, tmp_path: Path, synthetic_reward: None) -> None:
    section = ModelSection(device="cuda", autocast=True, gradient_checkpointing=True)
    model, _ = _train(folder, tmp_path / "run", section, "--rollout.micro_batch_size=2")
    assert next(model.parameters()).device.type == "cuda"


@pytest.mark.gpu
@cuda
def test_an_sft_smoke_run_on_cuda(small_world: Any, tmp_path: Path) -> None:
    from mmsr.train.sft import load_sft_config, train_sft

    world, index = small_world
    final = train_sft(load_sft_config("smoke", {"device": "cuda"}), world, index, tmp_path / "m")
    assert final["step"] > 0 and (tmp_path / "m" / "model.safetensors").is_file()
