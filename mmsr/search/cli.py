"""``mmsr search …``: one command group whose subcommands live beside the code they drive."""

from __future__ import annotations

import importlib
from typing import Any

# One line per module; each defines ``register(search_subparsers) -> None``.
SEARCH_SUBCOMMAND_MODULES: tuple[str, ...] = ("mmsr.search.fvqa.cli", "mmsr.search.service.cli")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("search", help="search backends, cache and service")
    search_sub = parser.add_subparsers(dest="search_command", metavar="SEARCH_COMMAND")
    for name in SEARCH_SUBCOMMAND_MODULES:
        importlib.import_module(name).register(search_sub)
