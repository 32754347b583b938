"""The batched vision tower (``mmsr.models.vision_batch``) and ``mmsr train vision``."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tiny_models
import torch
from PIL import Image
from safetensors.torch import load_file

from mmsr.models import PRESETS, ImageProcessor, build_tiny_model
from mmsr.models.io import save_pretrained
from mmsr.models.vision_batch import image_features
from mmsr.train.schedule import lr_multiplier
from mmsr.train.vision import VisionConfig, train_vision

BENCH = Path(__file__).resolve().parents[1] / "bench" / "vision_probe.py"


def _inputs(processor: ImageProcessor, sizes: list[tuple[int, int]]) -> tuple[Any, Any]:
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]
    processed = [processor(im) for im in images]
    pixels = torch.cat([p.pixel_values for p in processed])
    return pixels, torch.tensor([p.grid_thw for p in processed])


def _reference(visual: Any, pixels: torch.Tensor, grid: torch.Tensor) -> list[torch.Tensor]:
    merged = visual(pixels, grid_thw=grid).pooler_output
    tokens = (grid.prod(-1) // visual.spatial_merge_unit).tolist()
    return list(torch.split(merged, tokens))


@pytest.mark.parametrize("preset", ["micro", "tiny"])
def test_batched_tower_is_the_tower(preset: str) -> None:
    tok = tiny_models.tokenizer()
    model = build_tiny_model(preset, tok, seed=0)
    visual = model.model.visual
    pixels, grid = _inputs(tiny_models.image_processor(preset), [(80, 60)] * 5)
    fast = image_features(visual, pixels, grid)
    ref = _reference(visual, pixels, grid)
    assert fast.shape == (5, *ref[0].shape)
    for row, want in zip(fast, ref, strict=True):
        torch.testing.assert_close(row, want, rtol=1e-5, atol=1e-5)
    # the gradients are the tower's too
    fast.square().sum().backward()
    got = [p.grad.clone() for p in visual.parameters()]
    visual.zero_grad()
    torch.cat(ref).square().sum().backward()
    for g, p in zip(got, visual.parameters(), strict=True):
        torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-5)


def test_mixed_grids_fall_back_to_the_tower() -> None:
    tok = tiny_models.tokenizer()
    model = build_tiny_model("micro", tok, seed=0)
    config = dataclasses.replace(
        PRESETS["micro"].image_processor_config(), fixed_size=None, max_pixels=112 * 112
    )
    pixels, grid = _inputs(ImageProcessor(config), [(56, 56), (112, 56)])
    assert not bool((grid == grid[0]).all())
    fast = image_features(model.model.visual, pixels, grid)
    ref = _reference(model.model.visual, pixels, grid)
    for row, want in zip(fast, ref, strict=True):
        torch.testing.assert_close(row[: len(want)], want)
        assert not row[len(want) :].any()  # padding rows are zeros


def test_vision_config_needs_a_budget() -> None:
    with pytest.raises(ValueError, match="budget"):
        VisionConfig(minutes=0, max_steps=0)
    config = VisionConfig(minutes=1, warmup_steps=4)
    # as train_vision calls it: warm-up, then a cosine to 0 over the budget
    assert lr_multiplier(0, 0.0, warmup_steps=config.warmup_steps) == pytest.approx(0.25)
    assert lr_multiplier(10, 1.0, warmup_steps=config.warmup_steps) == pytest.approx(0.0)


def test_train_vision_changes_the_tower_only(
    small_world: tuple[Path, Path], tmp_path: Path
) -> None:
    tok = tiny_models.tokenizer()
    model = build_tiny_model("micro", tok, seed=0)
    init = save_pretrained(model, tok, tiny_models.image_processor("micro"), tmp_path / "init")
    config = VisionConfig(minutes=0, max_steps=3, batch_size=6, eval_pictures=8, eval_every=2)
    metrics = train_vision(*small_world, init, tmp_path / "out", config)
    assert metrics["final"]["step"] == 3
    assert [h["step"] for h in metrics["history"]] == [0, 2]
    assert 0.0 <= metrics["final"]["entity_accuracy"] <= 1.0
    assert (tmp_path / "out" / "vision_metrics.json").is_file()
    before = load_file(init / "model.safetensors")
    after = load_file(tmp_path / "out" / "model.safetensors")
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("visual.") for k in changed)


def test_a_cut_vision_run_resumes_on_the_same_pictures(
    small_world: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    from mmsr.train import resume

    tok = tiny_models.tokenizer()
    model = build_tiny_model("micro", tok, seed=0)
    init = save_pretrained(model, tok, tiny_models.image_processor("micro"), tmp_path / "init")
    config = VisionConfig(
        minutes=0, max_steps=4, batch_size=4, eval_pictures=4, eval_every=0, checkpoint_every=2
    )
    train_vision(*small_world, init, tmp_path / "uncut", config)
    save = resume.save

    def save_then_cut(out: Path, settings: Any, state: Any) -> None:
        save(out, settings, state)
        raise KeyboardInterrupt

    monkeypatch.setattr(resume, "save", save_then_cut)
    with pytest.raises(KeyboardInterrupt):
        train_vision(*small_world, init, tmp_path / "cut", config)
    monkeypatch.setattr(resume, "save", save)
    with caplog.at_level("INFO", logger="mmsr.train.vision"):
        metrics = train_vision(*small_world, init, tmp_path / "cut", config)
    assert "at step 2" in caplog.text and metrics["final"]["step"] == 4
    assert not (tmp_path / "cut" / ".resume").exists()
    uncut = load_file(tmp_path / "uncut" / "model.safetensors")
    resumed = load_file(tmp_path / "cut" / "model.safetensors")
    assert all(torch.equal(uncut[k], resumed[k]) for k in uncut)


def test_cli_refuses_a_folder_without_a_model(tmp_path: Path) -> None:
    from mmsr.cli import main

    with pytest.raises(SystemExit, match="not a saved model folder"):
        main(
            [
                "train",
                "vision",
                "--world",
                "w",
                "--index",
                "i",
                "--init",
                str(tmp_path),
                "--out",
                str(tmp_path / "o"),
            ]
        )


def _bench() -> Any:
    spec = importlib.util.spec_from_file_location("vision_probe", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["vision_probe"] = module
    spec.loader.exec_module(module)
    return module


def test_probe_mlp_reads_an_arbitrary_split() -> None:
    bench = _bench()
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(30, 8, generator=gen)
    tail = torch.tensor([float(i % 2) for i in range(30)])
    ids = torch.randint(0, 30, (1200,), generator=gen)
    x = centres[ids] + 0.05 * torch.randn(1200, 8, generator=gen)
    score = bench.fit_mlp(x[:1000], tail[ids[:1000]], hidden=64, steps=800)
    pred = score(x[1000:]) > 0
    assert (pred.float() == tail[ids[1000:]]).float().mean() > 0.9


def test_probe_over_a_small_world(small_world: tuple[Path, Path], tmp_path: Path) -> None:
    bench = _bench()
    tok = tiny_models.tokenizer()
    model = build_tiny_model("micro", tok, seed=0)
    folder = save_pretrained(model, tok, tiny_models.image_processor("micro"), tmp_path / "m")
    out = bench.probe(bench.tower_features(folder), *small_world, 24)
    assert out["n"] == 24 and out["n_test"] > 0 and out["scored_on"] == "test"
    assert 0.0 <= out["auc"] <= 1.0
    # scored on another question file (a recipe's held-out train questions): its pictures
    train = small_world[0] / "train.parquet"
    other = bench.probe(bench.tower_features(folder), *small_world, 24, questions=train)
    assert other["scored_on"] == str(train) and other["n_test"] != out["n_test"]


@pytest.mark.parametrize("preset", ["micro", "tiny"])
def test_model_inputs_give_the_models_own_forward(preset: str) -> None:
    from mmsr.models.vision_batch import model_inputs
    from mmsr.policy.local_model import build_hf_policy
    from mmsr.train.batch import collate, teacher_sequence

    tok = tiny_models.tokenizer()
    model = build_tiny_model(preset, tok, seed=0)
    processor = tiny_models.image_processor(preset)
    _, turns = build_hf_policy(model, tok, processor)
    seqs = [teacher_sequence(turns.encoder, tiny_models.conversation()) for _ in range(2)]
    batch = collate(seqs, model, processor, 0)
    inputs = model_inputs(model, batch.input_ids, batch.pixel_values, batch.image_grid_thw)
    assert set(inputs) == {"inputs_embeds"}  # the batched tower was used
    common = {"attention_mask": batch.attention_mask, "position_ids": batch.position_ids}
    want = model(
        input_ids=batch.input_ids,
        pixel_values=batch.pixel_values,
        image_grid_thw=batch.image_grid_thw,
        **common,
    ).logits
    torch.testing.assert_close(model(**inputs, **common).logits, want, rtol=1e-5, atol=1e-5)
    # pads that do not match the images are left for the model to refuse
    fewer = model_inputs(model, batch.input_ids[:1], batch.pixel_values, batch.image_grid_thw)
    assert "pixel_values" in fewer


def test_vision_bench_runs_and_checks_equality() -> None:
    spec = importlib.util.spec_from_file_location("vision_bench", BENCH.parent / "vision_bench.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.timed(lambda: None, 2) >= 0.0
