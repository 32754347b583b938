"""``mmsr world …``: build the offline mini web and its datasets."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("world", help="the offline mini web and its datasets")
    world_sub = parser.add_subparsers(dest="world_command", metavar="WORLD_COMMAND")
    build = world_sub.add_parser(
        "build",
        help="build the world: corpus/, train.parquet, test.parquet, entities, vocab, stats",
    )
    build.add_argument("--out", type=Path, required=True, help="output folder")
    build.add_argument("--seed", type=int, default=7, help="seed (same seed, same bytes)")
    build.add_argument("--small", action="store_true", help="a reduced world for tests")
    build.add_argument(
        "--font",
        type=Path,
        default=None,
        help="NotoColorEmoji.ttf (default: the fonts-noto-color-emoji location)",
    )
    build.add_argument(
        "--fact-layout",
        choices=("brief", "lines"),
        default="brief",
        help="how pages state facts: one infobox-like sentence (brief) or one sentence a "
        "fact, named as a text query names it (lines)",
    )
    build.add_argument("--quiet", action="store_true", help="no progress bars")
    build.set_defaults(func=_build)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)


def _build(args: argparse.Namespace) -> int:
    from mmsr.world.build import BuildConfig, build_world

    start = time.perf_counter()
    config = BuildConfig(
        out=args.out,
        seed=args.seed,
        small=args.small,
        font=args.font,
        fact_layout=args.fact_layout,
        progress=not args.quiet,
    )
    stats = build_world(config)
    print(json.dumps(stats, indent=1, ensure_ascii=False))
    print(f"world written to {args.out} in {time.perf_counter() - start:.1f} s")
    return 0
