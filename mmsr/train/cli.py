"""``mmsr train …``: one command group whose subcommands live beside the code they drive."""

from __future__ import annotations

import importlib
from typing import Any

# One line per module; each defines ``register(train_subparsers) -> None``.
TRAIN_SUBCOMMAND_MODULES: tuple[str, ...] = (
    "mmsr.train.sft_cli",
    "mmsr.train.grpo_cli",
    "mmsr.train.vision_cli",
    "mmsr.warmstart.cli",
    "mmsr.integrations.verl.cli",
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "train",
        help="SFT warm start, warm-start recipes, GRPO training, vision pretraining, GRPO on veRL",
    )
    train_sub = parser.add_subparsers(dest="train_command", metavar="TRAIN_COMMAND")
    for name in TRAIN_SUBCOMMAND_MODULES:
        importlib.import_module(name).register(train_sub)
