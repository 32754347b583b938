"""``mmsr search convert-fvqa-cache PICKLE OUT``: make FVQA's results pickle safe to serve."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(search_subparsers: Any) -> None:
    parser = search_subparsers.add_parser(
        "convert-fvqa-cache",
        help="convert FVQA's image-search results pickle into a folder the fvqa backend reads",
    )
    parser.add_argument("pickle", help="the released pickle (read with a restricted unpickler)")
    parser.add_argument("out", help="output folder (replaced if present)")
    parser.set_defaults(func=_convert)


def _convert(args: argparse.Namespace) -> int:
    from mmsr.search.fvqa.convert import convert_release

    print(json.dumps(convert_release(args.pickle, args.out)))
    return 0
