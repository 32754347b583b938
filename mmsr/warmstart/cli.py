"""``mmsr train warmstart``: build a warm start from a recipe file, every stage in one command.

mmsr train warmstart --recipe warmstart-tiny --world W --index IDX --out DIR
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    cmd = subparsers.add_parser(
        "warmstart",
        help="run a warm-start recipe (SFT and vision stages with step budgets) end to end",
    )
    cmd.add_argument(
        "--recipe", required=True, help="a recipe TOML file, or a packaged recipe's name"
    )
    cmd.add_argument("--world", type=Path, required=True, help="a world built by 'mmsr world'")
    cmd.add_argument("--index", type=Path, required=True, help="the local index of its corpus")
    cmd.add_argument("--out", type=Path, required=True, help="model folder to write at the end")
    cmd.add_argument(
        "--work", type=Path, default=None, help="stage folders (default: OUT.stages beside OUT)"
    )
    cmd.add_argument("--until", default=None, help="stop after this stage")
    cmd.add_argument("--strict", action="store_true", help="exit 3 when a check is not met")
    cmd.add_argument("--quiet", action="store_true", help="no progress bars")
    cmd.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from mmsr.config import ConfigError
    from mmsr.warmstart.checks import BOUNDS
    from mmsr.warmstart.recipe import RecipeError, load_recipe, run_recipe

    logging.getLogger("mmsr").setLevel(logging.INFO)
    try:
        recipe = load_recipe(args.recipe)
        report = run_recipe(
            recipe,
            args.world,
            args.index,
            args.out,
            work=args.work,
            until=args.until,
            progress=not args.quiet,
        )
    except (RecipeError, ConfigError) as err:
        raise SystemExit(f"mmsr train warmstart: {err}") from None
    for row in report["stages"]:
        print(
            f"stage {row['name']}: {row['trainer']}, {row['steps']} steps, "
            f"{row['seconds'] / 60:.1f} min"
        )
    if not report["finished"]:
        return 0
    failed = [name for name, c in report["checks"].items() if not c["ok"]]
    for name, c in report["checks"].items():
        bounds = ", ".join(f"{k} {c[k]}" for k in BOUNDS if k in c)
        print(f"check {name}: {c['value']} ({bounds}) {'ok' if c['ok'] else 'NOT MET'}")
    print(f"warm start written to {args.out} ({report['minutes']} min of training)")
    print(json.dumps({"checks_failed": failed}))
    return 3 if failed and args.strict else 0
