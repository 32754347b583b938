"""GRPO update time with a step's rollouts in arrival order vs ordered by length.

A GRPO step on the laptop mixes rollouts that answered directly (a first turn and a short
reply) with rollouts that searched (two or three turns with results), two or three times as
long. ``update_policy`` pads each micro-batch to its longest sequence, so in arrival order most
micro-batches pad short rollouts to the longest one; ``mmsr.train.grpo.by_length`` orders them
first. Both orders train the same rollouts with the same token-mean loss. This bench times
``update_policy`` on one tiny model (text only), the same synthetic rollouts in both orders,
alternating, and prints the pad share of each order and the time ratio measured in the run.

    .venv/bin/python bench/update_order.py                       # 64 rollouts, 16 a micro-batch
    .venv/bin/python bench/update_order.py --short 350 --long 1000 --searched 0.5

The last line printed is JSON.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from typing import Any

import torch

from mmsr.models import PRESETS, ImageProcessor, build_tiny_model, train_tokenizer
from mmsr.train.batch import TokenSequence, collate
from mmsr.train.grpo import by_length, update_policy
from mmsr.train.grpo_config import AlgoSection


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rollouts", type=int, default=64, help="rollouts in the step")
    parser.add_argument("--micro", type=int, default=16, help="micro-batch size")
    parser.add_argument("--short", type=int, default=350, help="tokens of a direct rollout")
    parser.add_argument("--long", type=int, default=900, help="tokens of a searched rollout")
    parser.add_argument("--searched", type=float, default=0.5, help="share of searched rollouts")
    parser.add_argument("--repeats", type=int, default=3, help="timed updates per order")
    parser.add_argument("--preset", default="tiny", help="tiny model preset")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    return parser.parse_args()


def rollouts(args: argparse.Namespace, tokenizer: Any) -> list[TokenSequence]:
    """Direct and searched rollouts in a random order, lengths jittered by ±10 %, the last
    tenth of each trained (the assistant's turns); plain tokens only (no image placeholder)."""
    rng = random.Random(0)
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    plain = [i for i, t in enumerate(tokens) if not (t.startswith("<|") and t.endswith("|>"))]
    out = []
    for _ in range(args.rollouts):
        base = args.long if rng.random() < args.searched else args.short
        n = int(base * rng.uniform(0.9, 1.1))
        trained = max(1, n // 10)
        ids = tuple(rng.choice(plain) for _ in range(n))
        mask = (0,) * (n - trained) + (1,) * trained
        out.append(TokenSequence(ids, mask, tuple(-1.0 * m for m in mask)))
    return out


def pad_share(sequences: list[TokenSequence], order: list[int], micro: int) -> float:
    padded = real = 0
    for i in range(0, len(order), micro):
        chunk = [len(sequences[j].token_ids) for j in order[i : i + micro]]
        padded += max(chunk) * len(chunk)
        real += sum(chunk)
    return 1.0 - real / padded


def timed_update(
    model: Any,
    processor: ImageProcessor,
    sequences: list[TokenSequence],
    order: list[int],
    micro: int,
) -> float:
    advantages = torch.linspace(-1.0, 1.0, len(sequences))
    batches = [
        (
            collate([sequences[j] for j in order[i : i + micro]], model, processor, 0),
            advantages[order[i : i + micro]],
        )
        for i in range(0, len(order), micro)
    ]
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.0)  # time the step, keep the weights
    algo = AlgoSection(kl_beta=0.0)
    start = time.perf_counter()
    update_policy(
        model, None, batches, optimizer, algo, suppressed_ids=(), temperature=1.0, grad_clip=1.0
    )
    return time.perf_counter() - start


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tokenizer = train_tokenizer(["a warm-up text for the tokenizer"] * 10, vocab_size=500)
    model = build_tiny_model(args.preset, tokenizer, seed=0)
    model.train()
    processor = ImageProcessor(PRESETS[args.preset].image_processor_config())
    sequences = rollouts(args, tokenizer)
    arrival = list(range(len(sequences)))
    ordered = by_length(sequences, arrival)
    timed_update(model, processor, sequences, arrival, args.micro)  # warm-up
    times: dict[str, list[float]] = {"arrival": [], "by_length": []}
    for _ in range(args.repeats):  # alternating, so drift on a shared machine hits both
        times["arrival"].append(timed_update(model, processor, sequences, arrival, args.micro))
        times["by_length"].append(timed_update(model, processor, sequences, ordered, args.micro))
    arrival_s, ordered_s = (statistics.median(times[k]) for k in ("arrival", "by_length"))
    result = {
        "rollouts": len(sequences),
        "micro_batch": args.micro,
        "pad_share_arrival": round(pad_share(sequences, arrival, args.micro), 3),
        "pad_share_by_length": round(pad_share(sequences, ordered, args.micro), 3),
        "update_s_arrival": round(arrival_s, 2),
        "update_s_by_length": round(ordered_s, 2),
        "speedup": round(arrival_s / ordered_s, 2),
    }
    print(
        f"{len(sequences)} rollouts ({args.searched:.0%} searched, ~{args.short}/{args.long} "
        f"tokens), micro-batches of {args.micro}: padding {result['pad_share_arrival']:.0%} "
        f"in arrival order, {result['pad_share_by_length']:.0%} by length; update "
        f"{arrival_s:.2f} s vs {ordered_s:.2f} s (x{result['speedup']:.2f})"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
