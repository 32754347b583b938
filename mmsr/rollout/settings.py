"""The reward and the rollout limits as config sections, read the same way by every entry point.

GRPO (``mmsr train grpo``), SFT (``mmsr train sft``), ``mmsr eval`` and veRL (``mmsr train
verl``) each compose a ``reward`` section (``mmsr.rewards.RewardConfig``) and a ``limits``
section (``RolloutLimits``), pass them down to the scoring and the rollouts, and save them
with the run. Here: the mapping a config is built from (``config_data``: an entry point's own
default limits under its layers, each layer's old keys moved into the sections first) and the
two sections of any preset or saved config (``read_settings``, what ``--settings FILE`` reads).
Not here: the sections themselves (``mmsr.rewards``, ``mmsr.rollout.rules``).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from mmsr.config import ConfigError, build, merge, read_yaml
from mmsr.rewards import RewardConfig
from mmsr.rollout.rules import RolloutLimits

logger = logging.getLogger(__name__)

LIMIT_FIELDS = tuple(f.name for f in fields(RolloutLimits))

# The keys the configs had before the reward and the limits were sections, by config layout.
LEGACY_KEYS: dict[str, dict[str, str]] = {
    "grpo": {
        "algo.reward_mode": "reward.mode",
        "algo.search_penalty": "reward.search_penalty",
        "algo.format_weight": "reward.format_weight",
        **{f"rollout.{name}": f"limits.{name}" for name in LIMIT_FIELDS},
    },
    "sft": {"eval.max_new_tokens": "limits.max_new_tokens"},
    "eval": {"reward_mode": "reward.mode", "max_new_tokens": "limits.max_new_tokens"},
}


def lift_legacy(data: Mapping[str, Any], layout: str) -> dict[str, Any]:
    """``data`` (a preset, a saved config or a set of overrides) with the old keys of the
    ``layout`` (``grpo``, ``sft`` or ``eval``) moved into the ``reward`` and ``limits``
    sections; a layer naming one setting both ways is an error.

    >>> lift_legacy({"algo": {"search_penalty": 0.3, "kl_beta": 0.0}}, "grpo")
    {'algo': {'kl_beta': 0.0}, 'reward': {'search_penalty': 0.3}}
    """
    out = copy.deepcopy(dict(data))
    for old, new in LEGACY_KEYS[layout].items():
        *parents, leaf = old.split(".")
        node: Any = out
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or leaf not in node:
            continue
        section, name = new.split(".")
        target = out.setdefault(section, {})
        if not isinstance(target, dict):
            raise ConfigError(f"{section}: expected a mapping, got {target!r}")
        if name in target:
            raise ConfigError(f"{old} and {new} name the same setting; keep {new}")
        target[name] = node.pop(leaf)
        logger.info("config key %s is read as %s", old, new)
    return out


def config_data(layout: str, *layers: Mapping[str, Any], limits: RolloutLimits) -> dict[str, Any]:
    """The mapping a config of ``layout`` is built from: ``layers`` (preset, settings,
    overrides) merged in order, each lifted first (``lift_legacy``), over ``limits`` — the
    entry point's defaults of the ``limits`` section, so that a partial section keeps them."""
    data: dict[str, Any] = {"limits": asdict(limits)}
    for layer in layers:
        data = merge(data, lift_legacy(layer, layout))
    return data


def read_settings(
    path: str | Path, *, limits: RolloutLimits = RolloutLimits()
) -> tuple[RewardConfig, RolloutLimits]:
    """The ``reward`` and ``limits`` sections of a preset or saved config file (YAML or JSON) of
    any entry point, old keys included, over the defaults (``limits``: the caller's); the
    file's other sections are not read, so a whole preset or run config can be given."""
    data = read_yaml(path)  # JSON is YAML too
    for layout in LEGACY_KEYS:
        data = lift_legacy(data, layout)
    section = data.get("limits", {})
    if isinstance(section, Mapping):  # else build says what is wrong
        section = {**asdict(limits), **section}
    reward = build(RewardConfig, data.get("reward", {}), f"{path}: reward.")
    return reward, build(RolloutLimits, section, f"{path}: limits.")
