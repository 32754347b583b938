"""Benchmark the rollout engine: throughput, the gain of KV reuse, and whether tool calls overlap.

A tiny Qwen2.5-VL (the default preset, ≈4 M parameters, random weights, tokenizer trained on the
world's text) rolls out 8 prompts × 8 rollouts of a small offline world against its local
index. The first turn is constrained to an image search (the model still scores every token;
``--free-tokens N`` samples N tokens of its reason, so that a group's first turns differ as
they do in training); the second is sampled freely, so every rollout has two turns. Figures:

- ``rollouts_per_min``: with the real (instant) local search, KV reuse across turns on;
- ``rollouts_per_min_no_kv_reuse``: the same with KV reuse off (every turn prefills the whole
  conversation), same run; ``kv_reuse_speedup`` is the ratio of the two;
- ``slow_tool_ratio``: wall time with 200 ms added to every tool call ÷ with the instant tool,
  same run (≤ 1.2 means the waits overlap instead of adding up);
- ``sequential_tool_ratio``: the slow tool with one tool worker, for comparison.

Each timing is the best of ``--repeats`` runs, the conditions interleaved, so that a burst of
load from other jobs on a shared machine does not land on one condition only. One torch thread
by default: with two on two busy cores every small op waits for the descheduled thread.

    .venv/bin/python bench/rollout_bench.py            # ~1 minute on 2 cores
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from mmsr.data import load_samples, open_image
from mmsr.models import PRESETS, ImageProcessor, build_tiny_model, train_tokenizer
from mmsr.policy import GenerationRequest
from mmsr.policy.local_model import build_hf_policy
from mmsr.protocol import default_prompt_set
from mmsr.rollout import RolloutEngine, RolloutLimits, RolloutTask
from mmsr.search.registry import build_search
from mmsr.types import ImageHit, Role

SEARCH_TURN = ("<reason>I do not recognise this.", "</reason><search><img></search>")


class SlowImageSearch:
    """The real image search plus a fixed delay per call."""

    def __init__(self, inner: Any, delay_s: float) -> None:
        self.inner, self.delay_s = inner, delay_s

    def search(self, image: Any, k: int) -> list[ImageHit]:
        time.sleep(self.delay_s)
        hits: list[ImageHit] = self.inner.search(image, k)
        return hits


def _world(work: Path) -> tuple[Path, Path]:
    world, index = work / "world", work / "index"
    for args in (
        ["world", "build", "--out", str(world), "--seed", "1", "--small"],
        ["index", "build", "--corpus", str(world / "corpus"), "--out", str(index)],
    ):
        subprocess.run([sys.executable, "-m", "mmsr.cli", *args], check=True, capture_output=True)
    return world, index


def _policy(world: Path, seed: int, free_tokens: int) -> tuple[Any, Any]:
    vocab = json.loads((world / "vocab.json").read_text(encoding="utf-8"))
    pages = [json.loads(line)["text"] for line in (world / "corpus" / "pages.jsonl").open()]
    prompts = default_prompt_set()
    texts = [prompts.first_turn, prompts.after_image_search, prompts.after_text_search, *pages]
    tokenizer = train_tokenizer(texts, vocab_size=6000, atomic_tokens=vocab)
    model = build_tiny_model("tiny", tokenizer, seed=seed).eval()
    processor = ImageProcessor(PRESETS["tiny"].image_processor_config())
    policy, encoder = build_hf_policy(model, tokenizer, processor, temperature=1.0)
    head = encoder.encoder.encode_text(SEARCH_TURN[0])
    tail = [*encoder.encoder.encode_text(SEARCH_TURN[1]), encoder.encoder.im_end_id]

    def force(request: GenerationRequest, sampled: list[int]) -> int | None:
        """The first turn: the search turn, ``free_tokens`` sampled ones inside its reason."""
        if any(t.role is Role.ASSISTANT for t in request.turns):
            return None
        n = len(sampled)
        if n < len(head):
            return head[n]
        n -= len(head) + free_tokens
        return tail[n] if 0 <= n < len(tail) else None

    policy.force = force
    return policy, encoder


def _timed_run(engine: RolloutEngine, tasks: list[RolloutTask]) -> tuple[float, list[Any]]:
    start = time.perf_counter()
    trajectories = engine.run(tasks, seeds=list(range(len(tasks))))
    return time.perf_counter() - start, trajectories


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--group", type=int, default=8, help="rollouts per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--delay-ms", type=float, default=200.0)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads; 1: on 2 cores shared with other jobs, 2 threads ran 1.5-3x slower",
    )
    parser.add_argument(
        "--free-tokens",
        type=int,
        default=0,
        help="sampled tokens in the first turn's reason (0: the group's first turns are equal)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs per condition (best kept)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        world, index = _world(Path(tmp))
        policy, encoder = _policy(world, seed=0, free_tokens=args.free_tokens)
        tools = build_search({"backend": "local", "index": str(index)})
        samples = load_samples(world / "test.parquet", limit=args.prompts)
        tasks = [
            RolloutTask(f"{s.id}#{g}", s.question, open_image(s.image))
            for s in samples
            if s.image is not None
            for g in range(args.group)
        ]
        limits = RolloutLimits(max_new_tokens=args.max_new_tokens)

        def engine(image_search: Any, workers: int = 16) -> RolloutEngine:
            return RolloutEngine(
                policy, image_search=image_search, text_search=tools.text, encoder=encoder,
                limits=limits, tool_workers=workers,
            )  # fmt: skip

        _timed_run(engine(tools.image), tasks[:4])  # warm-up
        delay = args.delay_ms / 1000
        conditions: dict[str, tuple[RolloutEngine, bool]] = {
            "instant": (engine(tools.image), True),
            "no_kv_reuse": (engine(tools.image), False),
            "slow": (engine(SlowImageSearch(tools.image, delay)), True),
        }
        best: dict[str, float] = {}
        for _ in range(args.repeats):
            for name, (eng, kv_reuse) in conditions.items():
                policy.kv_reuse = kv_reuse
                seconds, trajectories = _timed_run(eng, tasks)
                best[name] = min(best.get(name, seconds), seconds)
        policy.kv_reuse = True
        sequential, _ = _timed_run(engine(SlowImageSearch(tools.image, delay), workers=1), tasks)
    turns = sum(len(t.assistant_texts) for t in trajectories)
    instant = best["instant"]
    figures = {
        "rollouts": len(tasks),
        "mean_turns": turns / len(tasks),
        "seconds_instant_tool": round(instant, 3),
        "seconds_no_kv_reuse": round(best["no_kv_reuse"], 3),
        "seconds_slow_tool": round(best["slow"], 3),
        "seconds_slow_tool_sequential": round(sequential, 3),
        "rollouts_per_min": round(len(tasks) / instant * 60, 1),
        "rollouts_per_min_no_kv_reuse": round(len(tasks) / best["no_kv_reuse"] * 60, 1),
        "kv_reuse_speedup": round(best["no_kv_reuse"] / instant, 3),
        "slow_tool_ratio": round(best["slow"] / instant, 3),
        "sequential_tool_ratio": round(sequential / instant, 3),
        "tool_delay_ms": args.delay_ms,
        "torch_threads": args.threads,
        "repeats": args.repeats,
        "free_tokens": args.free_tokens,
    }
    for key, value in figures.items():
        print(f"{key:>30}: {value}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
