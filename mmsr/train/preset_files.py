"""Packaged YAML presets of the trainers (``mmsr/train/presets/<trainer>/<name>.yaml``).

Listing them reads file names only, so a CLI's help text needs no torch. Not here: what a
preset means (``mmsr.train.grpo_config``, ``mmsr.train.sft``).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from mmsr.config import ConfigError, read_yaml

PACKAGE = "mmsr.train"


def preset_names(trainer: str) -> list[str]:
    """Names of the packaged presets of ``trainer`` (``"grpo"``, ``"sft"``)."""
    folder = resources.files(PACKAGE).joinpath(f"presets/{trainer}")
    return sorted(
        p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")
    )


def read_preset(trainer: str, preset: str | None) -> dict[str, Any]:
    """The mapping of a packaged preset name or a YAML file path (None: no preset, ``{}``)."""
    if preset is None:
        return {}
    if preset in preset_names(trainer):
        ref = resources.files(PACKAGE).joinpath(f"presets/{trainer}/{preset}.yaml")
        with resources.as_file(ref) as path:
            return read_yaml(path)
    if Path(preset).is_file():
        return read_yaml(preset)
    raise ConfigError(
        f"unknown {trainer} preset {preset!r}; packaged: {', '.join(preset_names(trainer))}"
    )
