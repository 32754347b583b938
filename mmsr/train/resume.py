"""Mid-run resume for the trainers: a cut run started again continues as if never stopped.

A trainer calls ``save(out, config, state)`` every N steps with everything its loop needs —
weights, optimizer, its counters, its random streams (``random_states`` gives torch's and
Python's) — and ``load(out, config)`` at its start. The state lives in ``OUT/.resume/``,
replaced whole, so a cut write leaves the previous one; it is used only by a run of the very
same config (any changed setting starts afresh, and says so), and a damaged one is skipped
with a warning, never fatal. ``discard`` removes it once the run saved its model. Not here:
what each trainer puts in its state (``mmsr.train.sft``, ``mmsr.train.vision``).
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from pathlib import Path
from typing import Any

import torch

from mmsr.run_folder import replace_folder

logger = logging.getLogger(__name__)

RESUME_DIR = ".resume"
STATE_FILE = "state.pt"
CONFIG_FILE = "config.json"


def save(out: Path, config: dict[str, Any], state: dict[str, Any]) -> None:
    """Write ``state`` (anything ``torch.save`` takes) as the resume state of ``config``'s run."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f"{RESUME_DIR}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    torch.save(state, tmp / STATE_FILE)
    (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=1) + "\n", encoding="utf-8")
    replace_folder(tmp, out / RESUME_DIR)


def load(
    out: Path, config: dict[str, Any], defaults: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """The resume state ``config``'s run saved in ``out``; None when there is none, it was
    written for other settings, or it cannot be read. With ``defaults`` (the config's default
    values, same nesting), a setting added to the code since the state was saved counts as the
    same run while it holds its default value — a run cut in one version of mmsr can go on in
    the next."""
    folder = out / RESUME_DIR
    if not (folder / STATE_FILE).is_file():
        return None
    try:
        saved = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        saved = None
    if not same_settings(saved, _plain(config), _plain(defaults or {})):
        logger.warning("%s: a resume state of other settings; starting afresh", folder)
        return None
    try:
        state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=False)
    except Exception as err:  # a damaged file: the run starts again rather than stopping
        logger.warning("%s: unreadable resume state (%s); starting afresh", folder, err)
        return None
    if not isinstance(state, dict):
        logger.warning("%s: not a resume state; starting afresh", folder)
        return None
    return state


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value))


def same_settings(saved: Any, current: Any, defaults: Any) -> bool:
    """``saved`` equals ``current``, but for keys ``saved`` lacks that hold their default.

    >>> same_settings({"lr": 1}, {"lr": 1, "new": 0}, {"lr": 5, "new": 0})
    True
    >>> same_settings({"lr": 1}, {"lr": 1, "new": 2}, {"lr": 5, "new": 0})
    False
    """
    if not isinstance(saved, dict) or not isinstance(current, dict):
        return bool(saved == current)
    defaults = defaults if isinstance(defaults, dict) else {}
    if set(saved) - set(current):  # a setting the code no longer has: not the same run
        return False
    for key, value in current.items():
        if key in saved:
            if not same_settings(saved[key], value, defaults.get(key)):
                return False
        elif key not in defaults or value != defaults[key]:
            return False
    return True


def discard(out: Path) -> None:
    """Remove the resume state (the run finished and saved its model)."""
    shutil.rmtree(out / RESUME_DIR, ignore_errors=True)


def random_states() -> dict[str, Any]:
    """Torch's and Python's global random streams (what ``restore_random`` takes)."""
    return {"torch_rng": torch.get_rng_state(), "python_rng": random.getstate()}


def restore_random(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch_rng"])
    random.setstate(state["python_rng"])
