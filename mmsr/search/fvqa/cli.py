"""``mmsr search convert-fvqa-cache PICKLE OUT``: make FVQA's results pickle safe to serve."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def register(search_subparsers: Any) -> None:
    parser = search_subparsers.add_parser(
        "convert-fvqa-cache",
        help="convert FVQA's image-search results pickle into a folder the fvqa backend reads",
    )
    parser.add_argument("pickle", help="the released pickle (read with a restricted unpickler)")
    parser.add_argument("out", help="output folder (replaced if present)")
    parser.add_argument(
        "--ids",
        help="the split's questions (.parquet or .jsonl with data_id, or one id a line): "
        "also count the ids the release has no entry for",
    )
    parser.set_defaults(func=_convert)


def _convert(args: argparse.Namespace) -> int:
    from mmsr.search.fvqa.convert import convert_release, read_ids

    expected = None if args.ids is None else read_ids(args.ids)
    counts = convert_release(args.pickle, args.out, expected_ids=expected)
    without = counts["ids_without_results"] + counts.get("ids_missing", 0)
    print(
        f"coverage: {counts['ids_with_results']} ids with results, {without} without "
        f"({counts['ids_without_results']} empty or unreadable entries"
        + (f", {counts['ids_missing']} of the split's ids absent" if args.ids else "")
        + f"); {counts['thumbnails']} embedded thumbnails, {counts['thumbnail_urls']} urls "
        f"fetched when served, {counts['bad_thumbnails']} unusable",
        file=sys.stderr,
    )
    print(json.dumps(counts))
    return 0
