"""``mmsr train vision``: pretrain a saved model's vision tower on the world's pictures.

mmsr train vision --world W --index IDX --init mmsr/assets/warmstart-tiny --out V --minutes 20
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    vision = subparsers.add_parser(
        "vision", help="pretrain the vision tower to tell the world's entities apart"
    )
    vision.add_argument("--world", type=Path, required=True, help="a world built by 'mmsr world'")
    vision.add_argument("--index", type=Path, required=True, help="the local index of its corpus")
    vision.add_argument("--init", type=Path, required=True, help="the saved model to start from")
    vision.add_argument("--out", type=Path, required=True, help="model folder to write")
    vision.add_argument("--minutes", type=float, default=20.0, help="training-time budget")
    vision.add_argument("--steps", type=int, default=0, help="optimizer-step budget (0: none)")
    vision.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    vision.add_argument("--batch-size", type=int, default=64, help="pictures per step")
    vision.add_argument("--seed", type=int, default=0, help="pictures and classifier seed")
    vision.add_argument("--eval-every", type=int, default=200, help="steps between checks")
    vision.add_argument("--quiet", action="store_true", help="no progress bar")
    vision.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from mmsr.train.vision import VisionConfig, train_vision

    if not (args.init / "config.json").is_file():
        raise SystemExit(f"mmsr train vision: {args.init} is not a saved model folder")
    try:
        config = VisionConfig(
            minutes=args.minutes if args.steps == 0 else 0.0,
            max_steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=args.seed,
            eval_every=args.eval_every,
        )
    except ValueError as err:
        raise SystemExit(f"mmsr train vision: {err}") from None
    start = time.perf_counter()
    metrics = train_vision(
        args.world, args.index, args.init, args.out, config, progress=not args.quiet
    )
    print(json.dumps(metrics["final"], indent=1))
    print(f"model written to {args.out} in {(time.perf_counter() - start) / 60:.1f} min")
    return 0
