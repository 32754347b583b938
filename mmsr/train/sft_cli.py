"""``mmsr train sft`` (the warm start) and ``mmsr train sft-eval`` (measure a saved model).

mmsr train sft --world W --index IDX --out mmsr/assets/warmstart-tiny --seed 0 --minutes 45
mmsr train sft ... --teacher.same_kind 0.5   # any config field, as for grpo
mmsr train sft ... --prompts release-layout:DIR   # teach with another prompt set (or a folder)
mmsr train sft-eval --model mmsr/assets/warmstart-tiny --world W --index IDX --split test
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    # light imports only: the help text must not wait for torch
    from mmsr.teacher.config import COPY_ENTITIES, KINDS
    from mmsr.train.preset_files import preset_names

    sft = subparsers.add_parser("sft", help="supervised warm start on teacher conversations")
    sft.add_argument("--world", type=Path, required=True, help="a world built by 'mmsr world'")
    sft.add_argument("--index", type=Path, required=True, help="the local index of its corpus")
    sft.add_argument("--out", type=Path, required=True, help="model folder to write")
    sft.add_argument(
        "--preset",
        default="tiny-cpu",
        help=f"a packaged preset ({', '.join(preset_names('sft'))}) or a YAML file",
    )
    sft.add_argument("--seed", type=int, default=None, help="weights and data seed")
    sft.add_argument("--minutes", type=float, default=None, help="training-time budget")
    sft.add_argument("--steps", type=int, default=None, help="optimizer-step budget")
    sft.add_argument("--lr", type=float, default=None, help="peak learning rate")
    sft.add_argument("--batch-size", type=int, default=None, help="conversations per batch")
    sft.add_argument("--init", default=None, help="continue from this saved model folder")
    sft.add_argument(
        "--primer-steps", type=int, default=None, help="first steps on the primer kinds only"
    )
    sft.add_argument("--eval-every", type=float, default=None, help="minutes between evaluations")
    sft.add_argument(
        "--final-questions",
        type=int,
        default=None,
        help="questions of the final evaluation on the test split (0: all of them)",
    )
    sft.add_argument(
        "--weights",
        default=None,
        help=f"teacher mixture as kind=weight pairs, e.g. know=0.4,tail=0.2 (kinds not named: "
        f"0); kinds: {', '.join(KINDS)}",
    )
    sft.add_argument(
        "--head-direct",
        type=float,
        default=None,
        help="share of head train questions answered directly (the rest search)",
    )
    sft.add_argument(
        "--copy-entities",
        choices=COPY_ENTITIES,
        default=None,
        help="entities the copy drills picture (tail: no search is taught on a head picture "
        "outside the head kind)",
    )
    sft.add_argument("--quiet", action="store_true", help="no progress bar")
    # the rest of the command line (--section.field VALUE, e.g. --teacher.same_kind 0.5)
    sft.set_defaults(func=_train, takes_overrides=True)

    ev = subparsers.add_parser("sft-eval", help="greedy rollouts of a saved model on a split")
    ev.add_argument("--model", type=Path, required=True, help="a saved model folder")
    ev.add_argument("--world", type=Path, required=True)
    ev.add_argument("--index", type=Path, required=True)
    ev.add_argument("--split", default="test", choices=["train", "test"])
    ev.add_argument("--limit", type=int, default=0, help="questions (0: the whole split)")
    ev.add_argument("--out", type=Path, default=None, help="write metrics and rollouts here")
    ev.set_defaults(func=_evaluate)


def sft_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields the command's options set, as a nested mapping (unset ones left out)."""
    from dataclasses import asdict

    from mmsr.teacher.config import parse_weights

    top = {
        "seed": args.seed,
        "minutes": args.minutes,
        "max_steps": args.steps,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "init_from": args.init,
        "primer_steps": args.primer_steps,
        "eval_every_minutes": args.eval_every,
        "final_questions": args.final_questions,
    }
    settings: dict[str, Any] = {k: v for k, v in top.items() if v is not None}
    if args.steps is not None and args.minutes is None:
        settings["minutes"] = 0.0  # a steps budget alone is exactly reproducible
    teacher: dict[str, Any] = {}
    if args.weights is not None:
        teacher["weights"] = asdict(parse_weights(args.weights))
    if args.head_direct is not None:
        teacher["head_direct"] = args.head_direct
    if args.copy_entities is not None:
        teacher["copy_entities"] = args.copy_entities
    if teacher:
        settings["teacher"] = teacher
    return settings


def _train(args: argparse.Namespace) -> int:
    from mmsr.config import ConfigError
    from mmsr.train.sft import load_sft_config, train_sft

    if args.final_questions is not None and args.final_questions < 0:
        raise SystemExit("--final-questions takes 0 (all) or a positive count")
    try:
        config = load_sft_config(args.preset, sft_settings(args), args.overrides)
    except (ConfigError, ValueError) as err:
        raise SystemExit(f"mmsr train sft: {err}") from None
    start = time.perf_counter()
    final = train_sft(config, args.world, args.index, args.out, progress=not args.quiet)
    print(json.dumps(final, indent=1))
    print(f"warm start written to {args.out} in {(time.perf_counter() - start) / 60:.1f} min")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mmsr.data import load_samples
    from mmsr.models import load_model
    from mmsr.search.registry import build_search
    from mmsr.train.sft_check import EvalConfig, evaluate_model, pick_questions, summarize_rows

    model, tokenizer, processor = load_model(args.model)
    search = build_search({"backend": "local", "index": str(args.index)})
    assert search.image is not None and search.text is not None
    samples = load_samples(args.world / f"{args.split}.parquet")
    samples = pick_questions(samples, args.limit, seed=0)
    config = EvalConfig(questions=0)
    rows: list[dict[str, Any]] = []
    chunk = config.batch_size
    for start in tqdm(range(0, len(samples), chunk), desc="rollouts", unit="batch"):
        _, part = evaluate_model(
            model,
            tokenizer,
            processor,
            samples[start : start + chunk],
            image_search=search.image,
            text_search=search.text,
            config=config,
        )
        rows += part
    metrics = summarize_rows(rows)
    print(json.dumps(metrics, indent=1))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
        with (args.out / "rollouts.jsonl").open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return 0
