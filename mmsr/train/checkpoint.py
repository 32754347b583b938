"""Atomic training checkpoints: the model folder plus everything an exact resume needs.

A checkpoint is ``checkpoints/step_NNNNNN/`` holding ``model/`` (``mmsr.models.save_pretrained``:
weights, tokenizer, image processor) and ``trainer.pt`` (optimizer, LR scheduler, python /
numpy / torch RNG states, the step). It is written into a hidden temporary folder, every file
is fsync'ed, and only then renamed into place, so a crash never leaves a half checkpoint that
``latest_checkpoint`` would pick. Old checkpoints beyond ``keep`` are removed afterwards. A
write that fails (a full disk) removes its temporary folder and raises ``CheckpointWriteError``,
one line naming the folder; a resume skips a checkpoint whose files read back damaged
(``newest_intact``) for the newest intact one.
"""

from __future__ import annotations

import logging
import os
import pickle
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from safetensors import SafetensorError

from mmsr.models.image_processor import ImageProcessor
from mmsr.models.io import save_pretrained

logger = logging.getLogger(__name__)

T = TypeVar("T")

TRAINER_FILE = "trainer.pt"
_STEP_DIR = re.compile(r"^step_(\d{6,})$")

# What writing a checkpoint raises when the disk is full or not writable: OSError from Python's
# own writes, RuntimeError from torch.save's C++ stream, SafetensorError from the weights.
WRITE_ERRORS: tuple[type[Exception], ...] = (OSError, RuntimeError, SafetensorError)
# What reading back a file cut short or corrupt raises (torch.load, safetensors, transformers).
DAMAGE_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    EOFError,
    RuntimeError,
    ValueError,
    pickle.UnpicklingError,
    SafetensorError,
)


class CheckpointWriteError(OSError):
    """A checkpoint could not be written; the ones before it are intact."""


def _first_line(err: BaseException, limit: int = 200) -> str:
    """``Type: message``, its first line only and at most ``limit`` characters, for a one-line
    error (torch's messages run over several lines)."""
    text = f"{type(err).__name__}: {err}".strip().splitlines()[0]
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _write_failure(root: Path, step: int, err: BaseException) -> str:
    previous = latest_checkpoint(root)
    kept = f"the previous checkpoint {previous} is intact" if previous else "none came before it"
    return (
        f"could not write checkpoint step {step} into {root} (disk full or not writable?): "
        f"{_first_line(err)}; {kept}"
    )


def rng_state() -> dict[str, Any]:
    """The python, numpy and torch (CPU, and CUDA when present) RNG states."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
    for path in [folder, *sorted(p for p in folder.rglob("*") if p.is_dir())]:
        _fsync_dir(path)


def save_checkpoint(
    root: Path,
    step: int,
    *,
    model: Any,
    tokenizer: Any,
    image_processor: ImageProcessor,
    trainer_state: dict[str, Any],
    keep: int = 2,
    weights: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write checkpoint ``step`` under ``root`` atomically; returns its folder. ``weights``:
    the state dict to save instead of the model's own (LoRA merged into a copy)."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:06d}"
    tmp = root / f".tmp-step_{step:06d}"
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        save_pretrained(model, tokenizer, image_processor, tmp / "model", state_dict=weights)
        torch.save({**trainer_state, "step": step, "rng": rng_state()}, tmp / TRAINER_FILE)
        _fsync_tree(tmp)
        if final.exists():  # a re-run of the same step: the new one wins
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
    except WRITE_ERRORS as err:  # disk full, read-only: torch says only "basic_ios::clear"
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointWriteError(_write_failure(root, step, err)) from err
    for old in list_checkpoints(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(old)
    logger.info("checkpoint written: %s", final)
    return final


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _STEP_DIR.match(p.name) and (p / TRAINER_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint under ``root``, or None."""
    found = list_checkpoints(root)
    return found[-1] if found else None


def newest_intact(root: Path, read: Callable[[Path], T]) -> tuple[Path, T] | None:
    """The newest checkpoint under ``root`` that ``read`` reads whole, with what it read. A
    damaged one (a file cut short or corrupt) is skipped with a warning; None when ``root``
    holds no checkpoint; ValueError when every one is damaged."""
    skipped = []
    for checkpoint in reversed(list_checkpoints(root)):
        try:
            return checkpoint, read(checkpoint)
        except DAMAGE_ERRORS as err:
            logger.warning("skipping damaged checkpoint %s: %s", checkpoint, _first_line(err))
            skipped.append(f"{checkpoint.name} ({_first_line(err, 120)})")
    if skipped:
        raise ValueError(f"no intact checkpoint in {root} to resume from: {'; '.join(skipped)}")
    return None


def load_trainer_state(checkpoint: Path) -> dict[str, Any]:
    """The ``trainer.pt`` of a checkpoint (our own file: full unpickling is allowed)."""
    state: dict[str, Any] = torch.load(checkpoint / TRAINER_FILE, weights_only=False)
    return state
