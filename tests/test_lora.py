"""LoRA on the micro Qwen2.5-VL (CPU): what trains, the reference, checkpoints, a GRPO run.

The reference of a LoRA policy is the same model with its adapters disabled: its log-probs must
be the base model's exactly, however far the adapters have moved. A checkpoint's model folder
holds the adapters merged in, and loads as a plain model that computes what the adapted one did.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import tiny_models
import torch
from test_grpo_train import OVERRIDES, Tools, _samples
from test_grpo_train import synthetic_reward as synthetic_reward  # the fixture

from mmsr.models import build_tiny_model, load_model, save_pretrained
from mmsr.search.base import SearchBackends
from mmsr.train import grpo
from mmsr.train.batch import TokenSequence, collate, token_logprobs
from mmsr.train.checkpoint import latest_checkpoint
from mmsr.train.grpo import GRPOParts, train_grpo
from mmsr.train.grpo_config import ModelSection, load_grpo_config
from mmsr.train.grpo_setup import load_policy
from mmsr.train.memory import Arch

pytest.importorskip("peft")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    tok = tiny_models.tokenizer()
    model = build_tiny_model("micro", tok, seed=0)
    return save_pretrained(model, tok, tiny_models.image_processor("micro"), tmp_path / "base")


def _batch(model: Any) -> Any:
    tok = tiny_models.tokenizer()
    ids = tok.encode("<reason>The flag is France.</reason><answer>Paris</answer>")
    seq = TokenSequence(tuple(ids), (0, 0, *[1] * (len(ids) - 2)), (0.0,) * len(ids))
    return collate([seq], model, tiny_models.image_processor("micro"), tok.pad_token_id)


def _lora(folder: Path, rank: int = 4) -> tuple[Any, Any]:
    model, reference, _, _ = load_policy(folder, ModelSection(lora_rank=rank), True)
    return model, reference


def test_only_the_language_models_adapters_train(folder: Path) -> None:
    model, _ = _lora(folder)
    trained = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in n and "language_model" in n for n in trained)
    assert not any("visual" in n for n, _ in model.named_parameters() if "lora_" in n)
    # the memory plan's count of adapter parameters is peft's
    assert sum(trained.values()) == Arch.from_config(model.config.to_dict()).lora_params(4)
    assert all(p.dtype == torch.float32 for n, p in model.named_parameters() if "lora_" in n)


def _move_adapters(model: Any) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(len(name)))


def test_the_reference_is_the_base_model_and_checkpoints_merge(folder: Path) -> None:
    base, _, _ = load_model(folder)
    batch = _batch(base)
    expected = token_logprobs(base, batch).detach()
    model, reference = _lora(folder)
    # B = 0 at the start: the adapted model is the base model
    torch.testing.assert_close(token_logprobs(model, batch).detach(), expected)
    _move_adapters(model)
    adapted = token_logprobs(model, batch).detach()
    assert (adapted - expected).abs().max() > 1e-2  # the adapters matter now
    torch.testing.assert_close(token_logprobs(reference, batch), expected, atol=0, rtol=0)
    torch.testing.assert_close(token_logprobs(model, batch).detach(), adapted)  # re-enabled

    from mmsr.train import lora

    tok = tiny_models.tokenizer()
    out = save_pretrained(
        model,
        tok,
        tiny_models.image_processor("micro"),
        folder.parent / "merged",
        state_dict=lora.merged_state_dict(model),
    )
    merged, _, _ = load_model(out)
    assert not lora.is_lora(merged)
    torch.testing.assert_close(
        token_logprobs(merged, batch).detach(), adapted, atol=1e-5, rtol=1e-5
    )


def test_grpo_with_lora_trains_adapters_only_and_resumes(
    folder: Path, tmp_path: Path, synthetic_reward: None
) -> None:
    model, reference = _lora(folder)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
    adapters = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    parts = GRPOParts(
        model=model,
        reference=reference,
        tokenizer=tiny_models.tokenizer(),
        image_processor=tiny_models.image_processor("micro"),
        samples=_samples(),
        search=SearchBackends(image=Tools(), text=Tools()),  # type: ignore[arg-type]
    )
    cfg = load_grpo_config("tiny-cpu", [*OVERRIDES, "--run.steps=1", "--model.lora_rank=4"])
    metrics = train_grpo(cfg, parts, tmp_path / "run")
    assert torch.isfinite(torch.tensor(metrics["loss/total"]))
    after = dict(model.named_parameters())
    assert all(torch.equal(after[n], v) for n, v in frozen.items())  # the base is untouched
    assert any(not torch.equal(after[n], v) for n, v in adapters.items())
    checkpoint = latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert checkpoint is not None
    merged, _, _ = load_model(checkpoint / "model")  # a plain model folder
    batch = _batch(merged)
    torch.testing.assert_close(
        token_logprobs(merged, batch).detach(),
        token_logprobs(model, batch).detach(),
        atol=1e-5,
        rtol=1e-5,
    )
    # resume: a fresh LoRA model gets the checkpoint's adapters back and runs step 2
    fresh, fresh_ref = _lora(folder)
    optimizer = torch.optim.AdamW([p for p in fresh.parameters() if p.requires_grad])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    assert grpo.restore_checkpoint(checkpoint, fresh, optimizer, scheduler) == 1
    restored = dict(fresh.named_parameters())
    assert all(torch.equal(restored[n], after[n]) for n in adapters)
    fresh, fresh_ref = _lora(folder)
    parts2 = GRPOParts(**{**parts.__dict__, "model": fresh, "reference": fresh_ref})
    cfg2 = load_grpo_config("tiny-cpu", [*OVERRIDES, "--run.steps=2", "--model.lora_rank=4"])
    train_grpo(cfg2, parts2, tmp_path / "run", resume=True)
    assert latest_checkpoint(tmp_path / "run" / "checkpoints").name == "step_000002"  # type: ignore[union-attr]


def test_asking_for_lora_without_peft_is_a_clear_error(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "peft", None)  # import peft now raises ImportError
    with pytest.raises(ImportError, match=r"pip install -e '\.\[gpu\]'"):
        _lora(folder)


def test_importing_the_trainer_does_not_import_peft() -> None:
    import subprocess
    import sys

    code = (
        "import sys, mmsr.train.grpo, mmsr.train.grpo_setup, mmsr.cli; print('peft' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"
