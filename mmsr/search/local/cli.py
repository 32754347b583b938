"""``mmsr index …``: build the local search index from a corpus folder, train its image engine.

Usage: ``mmsr index build --corpus CORPUS_DIR --out INDEX_DIR [--engine packaged|none|DIR]``;
``mmsr index train-engine --corpus CORPUS_DIR --out ENGINE_DIR [--world W] [--steps N]``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("index", help="build the local search index")
    index_sub = parser.add_subparsers(dest="index_command", metavar="INDEX_COMMAND")
    build = index_sub.add_parser(
        "build", help="index a corpus folder (pages.jsonl + images) for the local backend"
    )
    build.add_argument("--corpus", required=True, help="folder holding pages.jsonl and images")
    build.add_argument("--out", required=True, help="index folder to write (replaced if present)")
    build.add_argument(
        "--skip-bad", action="store_true", help="skip malformed pages.jsonl rows (counted)"
    )
    build.add_argument("--no-progress", action="store_true", help="no progress bar")
    build.add_argument("--threads", type=int, default=None, help="CPU threads for image features")
    build.add_argument(
        "--engine",
        default="packaged",
        help="image engine: 'packaged' (the one shipped with mmsr, trained on the offline "
        "world's pictures), 'none' (pretrained EfficientNet features + colour histograms, "
        "no training) or a folder made by 'mmsr index train-engine' (default: packaged)",
    )
    build.add_argument(
        "--summary-order",
        choices=("page", "relevance"),
        default="page",
        help="text hits' summaries: the page's sentences in page order, or the sentence that "
        "answers the query first (relevance)",
    )
    build.set_defaults(func=_build)
    train = index_sub.add_parser(
        "train-engine",
        help="train an image engine on a corpus's page pictures (for 'index build --engine')",
    )
    train.add_argument("--corpus", required=True, help="folder holding pages.jsonl and images")
    train.add_argument("--out", required=True, help="engine folder to write (resumes from it)")
    train.add_argument(
        "--world",
        default=None,
        help="an offline world whose corpus this is: its *train* questions' pictures validate",
    )
    train.add_argument("--validation", type=int, default=300, help="validation pictures")
    train.add_argument("--steps", type=int, default=EngineDefaults.steps, help="training steps")
    train.add_argument("--batch", type=int, default=EngineDefaults.batch, help="views per step")
    train.add_argument("--lr", type=float, default=EngineDefaults.lr, help="learning rate")
    train.add_argument("--seed", type=int, default=0, help="seed of the views and the model")
    train.add_argument("--eval-every", type=int, default=EngineDefaults.eval_every)
    train.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(func=_train_engine)


class EngineDefaults:
    """``EngineTrainConfig``'s defaults, without importing torch to build the parser."""

    steps = 1200
    batch = 48
    lr = 5e-4
    eval_every = 200


def engine_folder(value: str | None) -> str | None:
    """``--engine``'s value as a folder: 'packaged' → the shipped engine, 'none' → None."""
    if value in (None, "none"):
        return None
    if value == "packaged":
        from mmsr.assets import IMAGE_ENGINE

        return str(IMAGE_ENGINE)
    return value


def _build(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from mmsr.search.local.index import build_index

    manifest = build_index(
        args.corpus,
        args.out,
        skip_bad=args.skip_bad,
        progress=not args.no_progress,
        threads=args.threads,
        engine=engine_folder(args.engine),
        summary_order=args.summary_order,
    )
    print(json.dumps(asdict(manifest)))
    return 0


def _train_engine(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from mmsr.search.local.engine import EngineTrainConfig, train_engine
    from mmsr.search.local.engine_data import corpus_pictures, world_validation

    pictures, page_ids = corpus_pictures(args.corpus)
    validation = (
        world_validation(args.world, page_ids, args.validation, args.seed) if args.world else []
    )
    config = EngineTrainConfig(
        steps=args.steps,
        batch=args.batch,
        lr=args.lr,
        seed=args.seed,
        threads=args.threads,
        eval_every=args.eval_every,
    )
    info = train_engine(
        pictures, args.out, config, validation=validation, progress=not args.no_progress
    )
    print(json.dumps(asdict(info)))
    return 0
