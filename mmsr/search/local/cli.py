"""``mmsr index …``: build the local search index from a corpus folder.

Usage: ``mmsr index build --corpus CORPUS_DIR --out INDEX_DIR [--skip-bad]``.
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
    build.set_defaults(func=_build)


def _build(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from mmsr.search.local.index import build_index

    manifest = build_index(
        args.corpus,
        args.out,
        skip_bad=args.skip_bad,
        progress=not args.no_progress,
        threads=args.threads,
    )
    print(json.dumps(asdict(manifest)))
    return 0
