"""``mmsr train …``: one command group whose subcommands live beside the code they drive."""

from __future__ import annotations

import importlib
from typing import Any

# One line per module; each defines ``register(train_subparsers) -> None``. The subcommands
# of packages above training (``mmsr train warmstart``, ``mmsr train verl``) are added to the
# group by ``mmsr.cli``, so that training names nothing above it.
TRAIN_SUBCOMMAND_MODULES: tuple[str, ...] = (
    "mmsr.train.sft_cli",
    "mmsr.train.grpo_cli",
    "mmsr.train.vision_cli",
)


def register(subparsers: Any) -> Any:
    """Adds the ``train`` group and its trainers; returns the group's subparsers."""
    parser = subparsers.add_parser(
        "train",
        help="SFT warm start, warm-start recipes, GRPO training, vision pretraining, GRPO on veRL",
    )
    train_sub = parser.add_subparsers(dest="train_command", metavar="TRAIN_COMMAND")
    for name in TRAIN_SUBCOMMAND_MODULES:
        importlib.import_module(name).register(train_sub)
    return train_sub
