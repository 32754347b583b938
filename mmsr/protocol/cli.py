"""``mmsr prompts`` and ``mmsr parse``: the protocol's prompt set and its action parser."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Any


def _cmd_prompts(args: argparse.Namespace) -> int:
    from mmsr.protocol.prompts import default_prompt_set, load_prompt_set

    prompts = load_prompt_set(args.dir) if args.dir else default_prompt_set()
    for role in ("first_turn", "after_image_search", "after_text_search", "search_failed"):
        print(f"--- {role} ---\n{getattr(prompts, role)}\n")
    return 0


def _cmd_parse(args: argparse.Namespace) -> int:
    from mmsr.protocol.actions import parse_action, well_formed_kind

    text = sys.stdin.read() if args.text == "-" else args.text
    action = parse_action(text)
    kind = well_formed_kind(text)
    record = {**asdict(action), "well_formed": kind is not None}
    print(json.dumps(record, ensure_ascii=False))
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("prompts", help="print a prompt set (ours, or one from a folder)")
    p.add_argument("--dir", help="folder of prompt files (default: mmsr's own prompt set)")
    p.set_defaults(func=_cmd_prompts)

    p = subparsers.add_parser("parse", help="parse one assistant turn into its action")
    p.add_argument("text", help="the turn text, or - to read it from standard input")
    p.set_defaults(func=_cmd_parse)
