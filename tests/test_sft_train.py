"""The SFT loop: the loss is the assistant tokens' NLL, a few steps lower it, a smoke run on a
small world saves a loadable bf16 model, and the committed warm start answers in protocol form."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import tiny_models
import torch

from mmsr.models import build_tiny_model, load_model, suppressed_token_ids
from mmsr.policy.local_model import build_hf_policy
from mmsr.teacher.turns import SEARCH_IMAGE
from mmsr.train.batch import collate, teacher_sequence, token_logprobs
from mmsr.train.schedule import lr_multiplier
from mmsr.train.sft import (
    CONFIG_FILE,
    METRICS_FILE,
    budget_progress,
    decision_slot_weights,
    load_sft_config,
    masked_logprobs,
    sft_loss,
    slot_prefix_ids,
    train_sft,
)
from mmsr.types import Role, Turn

WARMSTART = Path(__file__).resolve().parents[1] / "mmsr" / "assets" / "warmstart-tiny"


@pytest.fixture()
def micro() -> tuple[Any, Any, Any]:
    tok = tiny_models.tokenizer()
    return build_tiny_model("micro", tok, seed=0), tok, tiny_models.image_processor("micro")


def _batch(model: Any, tok: Any, processor: Any) -> Any:
    _, turn_encoder = build_hf_policy(model, tok, processor)
    seq = teacher_sequence(turn_encoder.encoder, tiny_models.conversation())
    return collate([seq, seq], model, processor, tok.pad_token_id)


def test_masked_logprobs_are_token_logprobs_on_assistant_tokens(micro: Any) -> None:
    model, tok, processor = micro
    batch = _batch(model, tok, processor)
    suppressed = suppressed_token_ids(tok)
    reference = token_logprobs(model, batch, suppressed_ids=suppressed)  # (B, T-1)
    picked = masked_logprobs(model, batch, suppressed)  # (N,)
    assert picked.shape == (batch.trained_tokens,)
    torch.testing.assert_close(picked, reference[batch.loss_mask.bool()], atol=1e-5, rtol=1e-5)
    expected = -(reference * batch.loss_mask).sum() / batch.loss_mask.sum()
    torch.testing.assert_close(sft_loss(model, batch, suppressed), expected, atol=1e-5, rtol=1e-5)


def test_only_assistant_tokens_are_trained_on(micro: Any) -> None:
    model, tok, processor = micro
    batch = _batch(model, tok, processor)
    suppressed = suppressed_token_ids(tok)
    loss = float(sft_loss(model, batch, suppressed).detach())
    user_target = int((batch.loss_mask[0] == 0).nonzero()[-1]) + 1  # a masked-out target id
    assistant_target = int((batch.loss_mask[0] == 1).nonzero()[0]) + 1
    for position, changes in ((user_target, False), (assistant_target, True)):
        ids = batch.input_ids.clone()
        ids[:, position] = (ids[:, position] + 1) % len(tok)
        changed = float(sft_loss(model, replace(batch, input_ids=ids), suppressed).detach())
        assert (abs(changed - loss) > 1e-6) is changes, position


@pytest.mark.parametrize(
    "reply", [SEARCH_IMAGE, "<reason>The image shows Peru.</reason><answer>Peru</answer>"]
)
def test_decision_weight_lands_on_the_pictures_slot_only(micro: Any, reply: str) -> None:
    model, tok, processor = micro
    _, turn_encoder = build_hf_policy(model, tok, processor)
    first = Turn(Role.USER, "<image>Question: what is it?", (tiny_models.image(),))
    seq = teacher_sequence(turn_encoder.encoder, [first, Turn(Role.ASSISTANT, reply)])
    batch = collate([seq], model, processor, tok.pad_token_id)
    prefix = slot_prefix_ids(tok)
    assert tok.decode(list(prefix)).strip() == "image shows"
    weights = decision_slot_weights(batch, prefix, 8.0)
    assert weights.shape == (batch.trained_tokens,)
    assert sorted(set(weights.tolist())) == [1.0, 8.0] and int((weights == 8.0).sum()) == 1
    targets = batch.input_ids[:, 1:][batch.loss_mask.bool()]
    slot = tok.decode([int(targets[weights == 8.0][0])])
    assert slot and reply.split("image shows", 1)[1].startswith(slot)  # the token after it
    assert torch.equal(decision_slot_weights(batch, prefix, 1.0), torch.ones_like(weights))


def test_a_few_steps_lower_the_loss(micro: Any) -> None:
    model, tok, processor = micro
    batch = _batch(model, tok, processor)
    suppressed = suppressed_token_ids(tok)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train(True)
    losses = []
    for _ in range(8):
        optimizer.zero_grad()
        loss = sft_loss(model, batch, suppressed)
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert losses[-1] < losses[0] - 0.5, losses


def test_schedule_warms_up_then_decays() -> None:
    config = replace(load_sft_config("tiny-cpu"), warmup_steps=10, max_steps=100, minutes=0.0)

    def lr_factor(step: int, progress: float) -> float:  # as train_sft calls it
        return lr_multiplier(
            step,
            progress,
            warmup_steps=config.warmup_steps,
            min_ratio=config.min_lr_ratio,
            warmup_scales_decay=True,
        )

    assert lr_factor(0, 0.0) == pytest.approx(0.1)
    assert lr_factor(9, 0.09) == pytest.approx(0.98, abs=0.01)
    assert lr_factor(99, 1.0) == pytest.approx(config.min_lr_ratio)
    timed = replace(config, max_steps=0, minutes=2.0)
    assert budget_progress(5, 60.0, timed) == pytest.approx(0.5)
    assert budget_progress(50, 30.0, replace(timed, max_steps=100)) == pytest.approx(0.5)


def test_presets_parse_and_a_budget_is_required() -> None:
    from mmsr.config import ConfigError
    from mmsr.train.preset_files import preset_names

    assert {"smoke", "tiny-cpu"} <= set(preset_names("sft"))
    for name in preset_names("sft"):
        assert load_sft_config(name).model_preset
    assert load_sft_config("smoke").limits.max_new_tokens == 24
    assert load_sft_config("tiny-cpu", {"seed": 3}).seed == 3
    nested = load_sft_config(
        "tiny-cpu", {"teacher": {"head_direct": 0.9}}, ["--teacher.weights.know", "1"]
    )
    assert nested.teacher.head_direct == 0.9 and nested.teacher.weights.know == 1.0
    assert nested.teacher.weights.head == 0.15  # the rest of the mixture kept
    with pytest.raises(ConfigError, match="budget"):
        load_sft_config("tiny-cpu", {"minutes": 0.0, "max_steps": 0})
    with pytest.raises(ConfigError, match="unknown sft preset 'nope'"):
        load_sft_config("nope")
    with pytest.raises(ConfigError, match=r"teacher\.weights\.knoww"):
        load_sft_config("tiny-cpu", overrides=["--teacher.weights.knoww", "1"])


def test_smoke_run_saves_a_loadable_bf16_model(small_world: Any, tmp_path: Path) -> None:
    world, index = small_world
    out = tmp_path / "warm"
    smoke = load_sft_config("smoke")
    final = train_sft(smoke, world, index, out)
    assert final["step"] == smoke.max_steps and math.isfinite(final["loss"])
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), framework="pt") as handle:
        dtypes = {handle.get_tensor(name).dtype for name in handle.keys()}  # noqa: SIM118
    assert dtypes == {torch.bfloat16}
    model, tok, _ = load_model(out)
    assert next(model.parameters()).dtype == torch.float32
    vocab = json.loads((world / "vocab.json").read_text(encoding="utf-8"))
    assert all(len(tok.encode(v, add_special_tokens=False)) == 1 for v in vocab)
    assert json.loads((out / CONFIG_FILE).read_text())["max_steps"] == 4
    assert "all" in json.loads((out / METRICS_FILE).read_text())["final"]


def test_cli_lists_the_sft_commands() -> None:
    for command in ("sft", "sft-eval"):
        done = subprocess.run(
            [sys.executable, "-m", "mmsr.cli", "train", command, "--help"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0 and "--world" in done.stdout, done.stderr


@pytest.mark.skipif(not (WARMSTART / "config.json").is_file(), reason="no committed warm start")
def test_committed_warm_start_answers_in_protocol_form(small_world: Any) -> None:
    from mmsr.data import load_samples, open_image
    from mmsr.protocol.actions import parse_action
    from mmsr.rollout import RolloutEngine, RolloutLimits, RolloutTask
    from mmsr.types import Invalid

    assert sum(p.stat().st_size for p in WARMSTART.iterdir()) <= 20 * 2**20
    model, tok, processor = load_model(WARMSTART)
    policy, encoder = build_hf_policy(model, tok, processor)
    engine = RolloutEngine(policy, encoder=encoder, limits=RolloutLimits(max_new_tokens=64))
    samples = load_samples(small_world[0] / "test.parquet")[:3]
    tasks = [RolloutTask(s.id, s.question, open_image(s.image or b"")) for s in samples]
    with torch.no_grad():
        trajectories = engine.run(tasks)
    for traj in trajectories:  # no search backend: a search comes back as a failure message
        first = parse_action(traj.assistant_texts[0])
        assert not isinstance(first, Invalid), traj.assistant_texts


def test_a_cut_run_resumes_on_the_same_batches(
    small_world: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    """Cut after the step-2 resume state, run again: the same weights as an uncut run."""
    from safetensors.torch import load_file

    from mmsr.train import resume

    world, index = small_world
    smoke = replace(load_sft_config("smoke"), checkpoint_every=2, final_questions=1)
    train_sft(smoke, world, index, tmp_path / "uncut")
    save = resume.save

    def save_then_cut(out: Path, config: Any, state: Any) -> None:
        save(out, config, state)
        raise KeyboardInterrupt  # the machine went away right after the state was written

    monkeypatch.setattr(resume, "save", save_then_cut)
    with pytest.raises(KeyboardInterrupt):
        train_sft(smoke, world, index, tmp_path / "cut")
    assert (tmp_path / "cut" / ".resume" / "state.pt").is_file()
    monkeypatch.setattr(resume, "save", save)
    with caplog.at_level("INFO", logger="mmsr.train.sft"):
        final = train_sft(smoke, world, index, tmp_path / "cut")
    assert "at step 2" in caplog.text  # continued, not started again (that would match too)
    assert final["step"] == smoke.max_steps
    assert not (tmp_path / "cut" / ".resume").exists()  # discarded once the model is saved
    uncut = load_file(str(tmp_path / "uncut" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "cut" / "model.safetensors"))
    assert uncut.keys() == resumed.keys()
    assert all(torch.equal(uncut[k], resumed[k]) for k in uncut)


def test_a_resume_state_is_used_only_by_its_own_settings(tmp_path: Path) -> None:
    from mmsr.train import resume

    resume.save(tmp_path, {"seed": 0}, {"step": 3})
    assert resume.load(tmp_path, {"seed": 0}) == {"step": 3}
    assert resume.load(tmp_path, {"seed": 1}) is None  # other settings: start afresh
    # a setting added to the code since: the same run while it holds its default
    assert resume.load(tmp_path, {"seed": 0, "new": 1}, {"seed": 5, "new": 1}) == {"step": 3}
    assert resume.load(tmp_path, {"seed": 0, "new": 2}, {"seed": 5, "new": 1}) is None
    assert resume.load(tmp_path, {}, {"seed": 5}) is None  # a setting the code lost
    (tmp_path / ".resume" / "state.pt").write_bytes(b"cut in the middle")
    assert resume.load(tmp_path, {"seed": 0}) is None  # damaged: skipped, not fatal
    resume.discard(tmp_path)
    assert resume.load(tmp_path, {"seed": 0}) is None and not (tmp_path / ".resume").exists()


def test_a_run_cut_in_its_final_evaluation_trains_no_more(
    small_world: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    """The resume state outlives the saved model until the final evaluation's files are
    written: a run cut there resumes at its last step, with the weights of an uncut run."""
    from safetensors.torch import load_file

    from mmsr.train import sft

    world, index = small_world
    smoke = replace(load_sft_config("smoke"), checkpoint_every=3, final_questions=1)
    assert smoke.max_steps % smoke.checkpoint_every != 0  # the last steps are saved after the loop
    train_sft(smoke, world, index, tmp_path / "uncut")
    evaluate = sft._Run.evaluate

    def cut_in_final(self: Any, step: int, minutes: float, *, final: bool = False) -> Any:
        if final:
            raise KeyboardInterrupt
        return evaluate(self, step, minutes, final=final)

    monkeypatch.setattr(sft._Run, "evaluate", cut_in_final)
    with pytest.raises(KeyboardInterrupt):
        train_sft(smoke, world, index, tmp_path / "cut")
    assert (tmp_path / "cut" / ".resume" / "state.pt").is_file()
    assert not (tmp_path / "cut" / METRICS_FILE).exists()
    monkeypatch.setattr(sft._Run, "evaluate", evaluate)
    with caplog.at_level("INFO", logger="mmsr.train.sft"):
        final = train_sft(smoke, world, index, tmp_path / "cut")
    assert f"at step {smoke.max_steps}" in caplog.text
    assert final["step"] == smoke.max_steps
    assert not (tmp_path / "cut" / ".resume").exists()
    uncut = load_file(str(tmp_path / "uncut" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "cut" / "model.safetensors"))
    assert all(torch.equal(uncut[k], resumed[k]) for k in uncut)
