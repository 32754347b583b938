"""``mmsr train grpo``: GRPO with search on a local policy.

Usage::

    mmsr train grpo --preset tiny-cpu --out runs/grpo [--resume] [--section.field VALUE ...]
    mmsr train grpo --preset tiny-cpu --print-config --optim.lr 1e-5   # show the resolved config

Overrides come last; unknown sections or fields are errors. The resolved config is saved as
``OUT/config.yaml``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def register(train_subparsers: Any) -> None:
    parser = train_subparsers.add_parser(
        "grpo",
        help="GRPO training with search (presets: tiny-cpu, qwen2.5-vl-7b-1gpu)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--preset", default="tiny-cpu", help="a packaged preset or a YAML file")
    parser.add_argument("--out", type=Path, default=Path("runs/grpo"), help="run folder")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved config and exit"
    )
    # the rest of the command line (--section.field VALUE ...) arrives as args.overrides
    parser.set_defaults(func=_run, takes_overrides=True)


def _run(args: argparse.Namespace) -> int:
    import yaml

    from mmsr.config import config_to_dict
    from mmsr.train.grpo_config import load_grpo_config

    cfg = load_grpo_config(args.preset, list(args.overrides))  # before the heavy imports
    if args.print_config:
        sys.stdout.write(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
        return 0
    from mmsr.train.grpo import TrainingDiverged, train_grpo
    from mmsr.train.grpo_setup import build_parts

    parts = build_parts(cfg, args.out)
    try:
        metrics = train_grpo(cfg, parts, args.out, resume=args.resume)
    except TrainingDiverged as err:
        logger.error("training stopped: %s", err)
        return 3
    summary = {
        k: round(v, 4) for k, v in metrics.items() if k.split("/")[0] in ("reward", "search")
    }
    logger.info("done: %s; outputs in %s", summary, args.out)
    return 0
