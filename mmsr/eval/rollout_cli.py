"""``mmsr rollout``: roll out a saved model on a dataset against a search backend.

Writes ``OUT/trajectories.jsonl`` (with each rollout's reward) and images beside it, and prints
a summary: end reasons, search ratio, mean reward. For inspecting what a model does; the
evaluation with baselines and metrics is ``mmsr eval``. Beside it because both roll a policy
out over a dataset (``mmsr.data``), which sits above the rollout engine.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("rollout", help="roll out a saved model on a dataset with search")
    p.add_argument("--model", required=True, type=Path, help="a saved model folder")
    p.add_argument("--data", required=True, help="any file mmsr.data.load_samples reads")
    p.add_argument(
        "--search", default="none", help="local:INDEX_DIR, http:URL, none or a config file"
    )
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--limit", type=int, default=16, help="questions to roll out")
    p.add_argument("--n", type=int, default=1, help="rollouts per question")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--batch-size", type=int, default=16, help="rollouts per policy call")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--settings",
        type=Path,
        default=None,
        help="reward and limits sections of a preset or run config (YAML/JSON)",
    )
    p.set_defaults(func=_cmd_rollout)


def _cmd_rollout(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mmsr.data import load_samples
    from mmsr.policy.local_model import load_hf_policy
    from mmsr.rewards import RewardConfig
    from mmsr.rollout import RolloutEngine, RolloutLimits
    from mmsr.rollout.settings import read_settings
    from mmsr.search.registry import build_search, search_config_from_spec

    reward, limits = (
        read_settings(args.settings) if args.settings else (RewardConfig(), RolloutLimits())
    )

    config = search_config_from_spec(args.search)
    tools = build_search(config) if config else None
    policy, encoder = load_hf_policy(args.model, temperature=args.temperature)
    engine = RolloutEngine(
        policy,
        image_search=tools.image if tools else None,
        text_search=tools.text if tools else None,
        limits=limits,
        encoder=encoder,
    )
    samples = [s for s in load_samples(args.data, limit=args.limit) if s.image is not None]
    work = [(s, k) for s in samples for k in range(args.n)]
    args.out.mkdir(parents=True, exist_ok=True)
    stats: dict[str, Any] = {"ends": Counter(), "searched": 0, "reward": 0.0}
    with (args.out / "trajectories.jsonl").open("w", encoding="utf-8") as f:
        for start in tqdm(range(0, len(work), args.batch_size), desc="rollouts", unit="batch"):
            chunk = work[start : start + args.batch_size]
            _run_chunk(engine, chunk, args.seed + start, args.out, f, stats, reward)
    n = max(len(work), 1)
    summary = {
        "rollouts": len(work),
        "reward": asdict(reward),
        "limits": asdict(limits),
        "mean_reward": stats["reward"] / n,
        "search_ratio": stats["searched"] / n,
        "end_reasons": dict(stats["ends"]),
        "out": str(args.out / "trajectories.jsonl"),
    }
    print(json.dumps(summary), file=sys.stdout)
    return 0


def _run_chunk(
    engine: Any,
    chunk: list[tuple[Any, int]],
    seed: int,
    out: Path,
    f: Any,
    stats: dict[str, Any],
    reward_config: Any,
) -> None:
    """Roll out one batch, write its records, add to the running statistics."""
    from mmsr.data import sample_image
    from mmsr.rewards import score_trajectory
    from mmsr.rollout import RolloutTask, trajectory_record

    tasks = [RolloutTask(f"{s.id}#{k}", s.question, sample_image(s)) for s, k in chunk]
    trajectories = engine.run(tasks, seeds=[seed + i for i in range(len(chunk))])
    for (sample, _), traj in zip(chunk, trajectories, strict=True):
        reward = score_trajectory(traj.assistant_texts, sample.golds, **asdict(reward_config))
        record = trajectory_record(traj, out / "images")
        record["reward"] = asdict(reward)
        record["golds"] = list(sample.golds)
        f.write(json.dumps(record, ensure_ascii=False) + "\n")
        stats["ends"][traj.end_reason.value] += 1
        stats["searched"] += int(traj.searched)
        stats["reward"] += reward.score
