"""Pretraining the vision tower to tell the world's pictures apart: ``mmsr train vision``.

What it is: a stage before (or between) SFT runs that trains only the vision tower of a saved
model (``model.visual``: patch embedding, blocks, merger) on fresh query-style pictures of the
world's entities (``mmsr.teacher.world_kit``'s drawer: Noto drawings, augmented like the
questions' images), with a throw-away linear classifier over the entities on the mean of the
image's merged tokens. The language model is not touched and no text is involved: the stage
teaches what the pictures look like, never a name, a fact or whether an entity is head or
tail (the labels are entity indices only, and the head/tail label is never read).

Why: measured on warm start K (``bench/vision_probe.py``), a classifier trained on fresh
pictures over the tower's features tells a held-out tail picture from a head one with AUC 0.69,
while the same classifier over the image index's pretrained EfficientNet features reaches 0.96.
The search decision needs that recognition (is this one of the entities I was taught?), and
SFT's one-token decision drills move it too little; a per-entity objective is the dense signal.
Every entity is pictured, tail ones included, as a real LMM's vision encoder has seen the web's
pictures of things its language model knows nothing about.

What it is not: a knowledge stage (that is SFT) or a change of architecture: the result is the
same ``Qwen2_5_VLForConditionalGeneration`` with new vision weights. Pictures are keyed
``vision:<seed>:<step>:<row>``; the question images of the test split are never drawn, and the
held-out check uses its own keys (``vision-eval:<i>``).
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from mmsr.models.io import load_model, save_pretrained
from mmsr.models.vision_batch import image_features
from mmsr.teacher.world_kit import WorldKit
from mmsr.train import resume
from mmsr.train.schedule import lr_multiplier

logger = logging.getLogger(__name__)

METRICS_FILE = "vision_metrics.json"


@dataclass(frozen=True)
class VisionConfig:
    """One vision pretraining run."""

    minutes: float = 20.0
    """Training-time budget in minutes, checks excluded (0: none)."""
    max_steps: int = 0
    """Optimizer-step budget (0: none); the first budget reached ends the run."""
    batch_size: int = 64
    """Pictures per step."""
    lr: float = 1e-3
    """Peak learning rate (AdamW), linear warm-up then cosine decay over the budget."""
    warmup_steps: int = 20
    """Steps of linear warm-up."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    seed: int = 0
    """Seeds the pictures drawn and the classifier's initialisation."""
    eval_pictures: int = 512
    """Held-out pictures of the check (their own keys), every ``eval_every`` steps and at the
    end."""
    eval_every: int = 200
    """Steps between checks (0: only at the end)."""
    checkpoint_every: int = 0
    """Steps between resume states (``OUT/.resume``: a cut run started again with the same
    settings continues from the last one, on the same pictures); 0: none."""

    def __post_init__(self) -> None:
        if self.max_steps <= 0 and self.minutes <= 0:
            raise ValueError("set a budget: max_steps or minutes")
        if self.batch_size < 1 or self.lr <= 0:
            raise ValueError("batch_size must be ≥ 1 and lr > 0")


class PictureClassifier:
    """The tower and the linear read-out over entities that trains it."""

    def __init__(self, model: Any, processor: Any, n_classes: int, seed: int) -> None:
        self.visual = model.model.visual
        self.processor = processor
        width = int(model.config.vision_config.out_hidden_size)
        torch.manual_seed(seed)
        self.head = torch.nn.Linear(width, n_classes)

    def parameters(self) -> list[torch.nn.Parameter]:
        return [*self.visual.parameters(), *self.head.parameters()]

    def logits(self, images: list[Any]) -> torch.Tensor:
        processed = [self.processor(image) for image in images]
        pixels = torch.cat([p.pixel_values for p in processed])
        grid = torch.tensor([p.grid_thw for p in processed])
        out: torch.Tensor = self.head(image_features(self.visual, pixels, grid).mean(dim=1))
        return out


def train_vision(
    world: Path,
    index: Path,
    init: Path,
    out: Path,
    config: VisionConfig,
    *,
    progress: bool = False,
) -> dict[str, Any]:
    """Train ``init``'s vision tower on ``world``'s pictures and save the model to ``out``;
    returns (and writes to ``out/vision_metrics.json``) the run's figures."""
    kit = WorldKit.open(world, index)
    model, tokenizer, processor = load_model(init)
    entities = kit.entities
    clf = PictureClassifier(model, processor, len(entities), config.seed)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in clf.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(clf.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    rng = random.Random(f"vision:{config.seed}")
    held_out = [(i % len(entities), f"vision-eval:{i}") for i in range(config.eval_pictures)]

    def check() -> float:
        clf.visual.eval()
        right = 0
        with torch.no_grad():
            for start in range(0, len(held_out), config.batch_size):
                chunk = held_out[start : start + config.batch_size]
                images = [kit.query_image(entities[e], key) for e, key in chunk]
                pred = clf.logits(images).argmax(-1).tolist()
                right += sum(p == e for p, (e, _) in zip(pred, chunk, strict=True))
        clf.visual.train()
        return right / max(1, len(held_out))

    settings = {"init": str(init), "world": str(world), "config": asdict(config)}
    defaults = {"init": str(init), "world": str(world), "config": asdict(VisionConfig())}
    state = resume.load(out, settings, defaults)
    if state is None:
        history = [{"step": 0, "train_minutes": 0.0, "entity_accuracy": check()}]
        step, train_seconds, smooth = 0, 0.0, 0.0
    else:  # a cut run of these very settings: continue on the same pictures
        clf.visual.load_state_dict(state["visual"])
        clf.head.load_state_dict(state["head"])
        opt.load_state_dict(state["optimizer"])
        resume.restore_random(state)
        rng.setstate(state["rng"])
        step, train_seconds, smooth = state["loop"]
        history = json.loads(state["history"])
        logger.info("resumed %s at step %d", out, step)
    clf.visual.train()
    total = config.max_steps if config.max_steps > 0 else None
    bar = tqdm(total=total, initial=step, desc="vision", unit="step", disable=not progress)
    while True:
        shares = [step / config.max_steps] if config.max_steps > 0 else []
        if config.minutes > 0:
            shares.append(train_seconds / (60.0 * config.minutes))
        done = max(shares)
        if done >= 1.0:
            break
        t0 = time.monotonic()
        rows = [rng.randrange(len(entities)) for _ in range(config.batch_size)]
        keys = [f"vision:{config.seed}:{step}:{j}" for j in range(len(rows))]
        images = [kit.query_image(entities[e], k) for e, k in zip(rows, keys, strict=True)]
        loss = torch.nn.functional.cross_entropy(clf.logits(images), torch.tensor(rows))
        for group in opt.param_groups:
            # warm-up, then a cosine from 1 to 0 over the budget
            group["lr"] = config.lr * lr_multiplier(step, done, warmup_steps=config.warmup_steps)
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(clf.parameters(), 1.0)
        opt.step()
        step += 1
        train_seconds += time.monotonic() - t0
        value = float(loss.detach())
        smooth = value if step == 1 else 0.95 * smooth + 0.05 * value
        bar.update(1)
        bar.set_postfix(loss=f"{smooth:.3f}")
        if config.eval_every > 0 and step % config.eval_every == 0:
            history.append(
                {
                    "step": step,
                    "train_minutes": round(train_seconds / 60, 2),
                    "entity_accuracy": check(),
                }
            )
            logger.info(
                "step %d: held-out entity accuracy %.3f", step, history[-1]["entity_accuracy"]
            )
        if config.checkpoint_every > 0 and step % config.checkpoint_every == 0:
            state = {
                "visual": clf.visual.state_dict(),
                "head": clf.head.state_dict(),
                "optimizer": opt.state_dict(),
                **resume.random_states(),
                "rng": rng.getstate(),
                "loop": (step, train_seconds, smooth),
                "history": json.dumps(history),
            }
            resume.save(out, settings, state)
    bar.close()
    final = {
        "step": step,
        "train_minutes": round(train_seconds / 60, 2),
        "entity_accuracy": check(),
        "loss": round(smooth, 4),
    }
    for p in model.parameters():
        p.requires_grad_(True)
    save_pretrained(model, tokenizer, processor, out)
    metrics = {
        "init": str(init),
        "world": str(world),
        "entities": len(entities),
        "config": asdict(config),
        "final": final,
        "history": history,
    }
    tmp = out / "vision_metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    os.replace(tmp, out / METRICS_FILE)
    resume.discard(out)
    return metrics
