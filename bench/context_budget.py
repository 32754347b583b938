"""Does the longest legal rollout fit a GRPO preset's token budget, on a given world?

A rollout whose next tool turn would not fit ``limits.max_total_tokens`` ends as
``context_full`` with no answer, reward 0, so a budget below the longest legal conversation
punishes searching for the budget's sake, not the method's. This script builds, for every
train question of a world, the longest conversation the protocol allows with one image search
and one text search: the first turn (the default prompt set, the question's image), an image
search's real hits (``limits.image_k``), a text search naming the entity with its real hits
(``limits.text_k``), and three assistant turns of ``limits.max_new_tokens`` tokens each; it
counts the tokens with the chat encoder (image pads included) and prints the longest, the
99th percentile and the share within the preset's budget.

    python bench/context_budget.py --world W --index IDX --preset tiny-cpu

Last line: JSON with ``budget``, ``longest``, ``p99``, ``within`` (share) and ``n``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from mmsr.models.chat_encoder import ChatEncoder  # noqa: E402
from mmsr.protocol.prompts import default_prompt_set  # noqa: E402
from mmsr.protocol.render import (  # noqa: E402
    render_first_turn,
    render_image_results,
    render_text_results,
)
from mmsr.teacher.turns import sample_question, text_query  # noqa: E402
from mmsr.teacher.world_kit import WorldKit  # noqa: E402
from mmsr.train.grpo_config import load_grpo_config  # noqa: E402
from mmsr.types import Role, Turn  # noqa: E402


def longest_rollouts(
    kit: WorldKit, encoder: ChatEncoder, *, image_k: int, text_k: int, max_new_tokens: int
) -> list[int]:
    """Per train question, the tokens of its longest legal rollout (see the module docstring)."""
    prompts = default_prompt_set()
    by_id = kit.by_id
    stub = Turn(Role.ASSISTANT, "")
    per_reply = max_new_tokens + len(encoder.separator_ids)
    totals = []
    for sample in kit.train:
        q = sample_question(sample, by_id)
        query = q.entity.name if q.fact is None else text_query(q.entity, q.fact)
        turns = [
            render_first_turn(q.text, q.image, prompts),
            stub,
            render_image_results(kit.image_hits(sample, q.image, image_k), q.text, prompts),
            stub,
            render_text_results(kit.text_hits(query, q.text, text_k), q.text, prompts),
            stub,
        ]
        segments = encoder.encode_segments(turns)
        users = sum(len(s.input_ids) for s, t in zip(segments, turns, strict=True) if t is not stub)
        totals.append(users + 3 * per_reply)
    return totals


def measure(world: Path, index: Path, preset: str, model: Path | None = None) -> dict[str, Any]:
    """The figures of the module docstring, with the tokenizer and image processor of
    ``model`` (default: the committed warm start)."""
    from mmsr.assets import WARMSTART_TINY
    from mmsr.models.io import load_tokenizer_and_processor

    cfg = load_grpo_config(preset)
    encoder = ChatEncoder(*load_tokenizer_and_processor(model or WARMSTART_TINY))
    kit = WorldKit.open(world, index)
    r = cfg.limits
    totals = sorted(
        longest_rollouts(
            kit, encoder, image_k=r.image_k, text_k=r.text_k, max_new_tokens=r.max_new_tokens
        )
    )
    budget = r.max_total_tokens
    return {
        "preset": preset,
        "budget": budget,
        "longest": totals[-1],
        "p99": totals[int(0.99 * (len(totals) - 1))],
        "within": sum(t <= budget for t in totals) / len(totals),
        "n": len(totals),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--world", type=Path, required=True)
    ap.add_argument("--index", type=Path, required=True)
    ap.add_argument("--preset", default="tiny-cpu")
    ap.add_argument("--model", type=Path, default=None, help="tokenizer of (default: warm start)")
    args = ap.parse_args(argv)
    out = measure(args.world, args.index, args.preset, args.model)
    print(
        f"{out['preset']}: budget {out['budget']} tokens; longest legal rollout {out['longest']}, "
        f"p99 {out['p99']}; {100 * out['within']:.1f} % of {out['n']} train questions fit"
    )
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
