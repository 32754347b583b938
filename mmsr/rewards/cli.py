"""``mmsr reward`` and ``mmsr walkthrough``: score trajectories, and the protocol with its
reward on scripted turns, step by step."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

# A walk through the protocol on scripted assistant turns: what each turn asks for, whether
# it is well formed, and the reward it earns. Gold answer: "Paris".
_DEMO_TRAJECTORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("answers directly", ("<reason>The Eiffel Tower is in Paris.</reason><answer>Paris</answer>",)),
    (
        "image search, then answers",
        (
            "<reason>I do not recognise this tower.</reason><search><img></search>",
            "<reason>The results show the Eiffel Tower.</reason><answer>Paris</answer>",
        ),
    ),
    (
        "image and text search, then answers",
        (
            "<reason>Unknown tower.</reason><search><img></search>",
            "<reason>It is the Eiffel Tower.</reason><text_search>Eiffel Tower city</text_search>",
            "<reason>The page says Paris.</reason><answer>Paris</answer>",
        ),
    ),
    ("answers wrongly", ("<reason>Looks like Rome.</reason><answer>Rome</answer>",)),
    ("answers without reasoning", ("<answer>Paris</answer>",)),
    ("writes after its action", ("<reason>Easy.</reason><answer>Paris</answer> Hope it helps!",)),
)


def _cmd_reward(args: argparse.Namespace) -> int:
    from mmsr.rewards import score_trajectory

    total, n = 0.0, 0
    with Path(args.file).open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record: dict[str, Any] = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{args.file}:{line_no}: not JSON: {err}") from err
            if not isinstance(record, dict) or "turns" not in record or "golds" not in record:
                raise ValueError(f"{args.file}:{line_no}: expected an object with turns and golds")
            breakdown = score_trajectory(
                record["turns"],
                record["golds"],
                mode=args.mode,
                question=record.get("question", ""),
            )
            print(json.dumps({"line": line_no, **asdict(breakdown)}, ensure_ascii=False))
            total, n = total + breakdown.score, n + 1
    print(f"{n} trajectories, mean reward {total / n if n else 0.0:.4f}", file=sys.stderr)
    return 0


def _cmd_walkthrough(args: argparse.Namespace) -> int:
    from mmsr.protocol.actions import parse_action
    from mmsr.rewards import score_trajectory

    print("The protocol and the reward on scripted trajectories (gold answer: Paris).\n")
    print(f"{'trajectory':<38} {'actions':<36} {'format':>6} {'search':>6} {'reward':>6}")
    for name, turns in _DEMO_TRAJECTORIES:
        actions = " → ".join(parse_action(t).kind.value for t in turns)
        r = score_trajectory(list(turns), ["Paris"])
        print(
            f"{name:<38} {actions:<36} {r.format_score:>6.0f} {r.search_count:>6} {r.score:>6.2f}"
        )
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("reward", help="score trajectories from a JSONL file")
    p.add_argument("file", help='JSONL, one {"turns": [...], "golds": [...]} per line')
    p.add_argument("--mode", default="em", choices=["em", "subem", "f1"], help="accuracy mode")
    p.set_defaults(func=_cmd_reward)

    p = subparsers.add_parser("walkthrough", help="the protocol and the reward, step by step")
    p.set_defaults(func=_cmd_walkthrough)
