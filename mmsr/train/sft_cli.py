"""``mmsr train sft`` (the warm start) and ``mmsr train sft-eval`` (measure a saved model).

mmsr train sft --world W --index IDX --out mmsr/assets/warmstart-tiny --seed 0 --minutes 45
mmsr train sft-eval --model mmsr/assets/warmstart-tiny --world W --index IDX --split test
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    from mmsr.train.sft import SFT_PRESETS
    from mmsr.train.teacher import COPY_ENTITIES, KINDS

    sft = subparsers.add_parser("sft", help="supervised warm start on teacher conversations")
    sft.add_argument("--world", type=Path, required=True, help="a world built by 'mmsr world'")
    sft.add_argument("--index", type=Path, required=True, help="the local index of its corpus")
    sft.add_argument("--out", type=Path, required=True, help="model folder to write")
    sft.add_argument("--preset", default="tiny-cpu", choices=sorted(SFT_PRESETS))
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
        help=f"teacher mixture: name=weight pairs, e.g. know=0.4,tail=0.2 (others 0), or "
        f"{len(KINDS)} numbers in this order: {', '.join(KINDS)}",
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
    sft.set_defaults(func=_train)

    ev = subparsers.add_parser("sft-eval", help="greedy rollouts of a saved model on a split")
    ev.add_argument("--model", type=Path, required=True, help="a saved model folder")
    ev.add_argument("--world", type=Path, required=True)
    ev.add_argument("--index", type=Path, required=True)
    ev.add_argument("--split", default="test", choices=["train", "test"])
    ev.add_argument("--limit", type=int, default=0, help="questions (0: the whole split)")
    ev.add_argument("--out", type=Path, default=None, help="write metrics and rollouts here")
    ev.set_defaults(func=_evaluate)


def _train(args: argparse.Namespace) -> int:
    from mmsr.train.sft import resolve_sft_config, train_sft

    if args.final_questions is not None and args.final_questions < 0:
        raise SystemExit("--final-questions takes 0 (all) or a positive count")

    config = resolve_sft_config(
        args.preset,
        seed=args.seed,
        minutes=args.minutes,
        max_steps=args.steps,
        lr=args.lr,
        batch_size=args.batch_size,
        init_from=args.init,
        primer_steps=args.primer_steps,
        eval_every_minutes=args.eval_every,
        final_questions=args.final_questions,
    )
    if args.weights is not None:
        from mmsr.train.teacher import parse_weights

        try:
            weights = parse_weights(args.weights)
        except ValueError as err:
            raise SystemExit(str(err)) from None
        teacher = replace(config.teacher, weights=weights)
        config = replace(config, teacher=teacher)
    if args.head_direct is not None:
        if not 0.0 <= args.head_direct <= 1.0:
            raise SystemExit("--head-direct takes a share between 0 and 1")
        teacher = replace(config.teacher, head_direct=args.head_direct)
        config = replace(config, teacher=teacher)
    if args.copy_entities is not None:
        config = replace(config, teacher=replace(config.teacher, copy_entities=args.copy_entities))
    if args.steps is not None and args.minutes is None:
        config = resolve_sft_config(args.preset, **{**_top(config), "minutes": 0.0})
    start = time.perf_counter()
    final = train_sft(config, args.world, args.index, args.out, progress=not args.quiet)
    print(json.dumps(final, indent=1))
    print(f"warm start written to {args.out} in {(time.perf_counter() - start) / 60:.1f} min")
    return 0


def _top(config: Any) -> dict[str, Any]:
    from dataclasses import fields

    return {f.name: getattr(config, f.name) for f in fields(config)}


def _evaluate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mmsr.data import load_samples
    from mmsr.models import load_model
    from mmsr.search.registry import build_search
    from mmsr.train.sft_eval import EvalConfig, evaluate_model, pick_questions, summarize_rows

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
