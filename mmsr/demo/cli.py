"""``mmsr demo``: run the demo's pipeline and print its summary table.

    mmsr demo --out runs/demo [--steps N] [--limit N] [--ablations] [--paper-ablations]
              [--resume]

Not here: what the demo runs (``mmsr.demo.pipeline``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mmsr.demo.paper import BLIND_WARMSTART_DIR, PaperConfig
from mmsr.demo.pipeline import WARMSTART_DIR, DemoConfig, run_demo


def _print_summary(summary: dict[str, Any]) -> None:
    nan = float("nan")
    print(f"\n{'method':<22} {'accuracy':>9} {'search ratio':>13} {'SR free':>8} "
          f"{'SR required':>12} {'precision':>10} {'recall':>7} {'reward':>7}")  # fmt: skip
    for name, row in summary["methods"].items():
        print(
            f"{name:<22} {100 * row['accuracy']:>8.1f}% {100 * row['search_ratio']:>12.1f}% "
            f"{100 * row.get('search_ratio/search_free', nan):>7.1f}% "
            f"{100 * row.get('search_ratio/search_required', nan):>11.1f}% "
            f"{row.get('search_precision', nan):>10.2f} {row.get('search_recall', nan):>7.2f} "
            f"{row.get('reward', nan):>7.3f}"
        )
    target = summary.get("target")
    if target is not None:
        print(f"\ntarget (on_demand_rl ≥ rag accuracy, ≤ 0.7 × rag search ratio): "
              f"{'met' if target['met'] else 'not met'}")  # fmt: skip
    decision = summary.get("decision")
    if decision is not None:
        failed = [k for k, v in decision.items() if k != "met" and not v]
        verdict = "met" if decision["met"] else "not met; short of " + ", ".join(failed)
        print(f"search decision (SR, precision, recall, accuracy bars): {verdict}")
    regime = summary.get("regime")
    if regime is not None:
        failed = [k for k, v in regime.items() if k != "met" and not v]
        verdict = "met" if regime["met"] else "not met; short of " + ", ".join(failed)
        print(f"the paper's regime (searching pays, the penalty decides): {verdict}")
    probed = summary.get("decision_probe", {})
    if probed:
        aucs = ", ".join(f"{name} {row['auc']:.3f}" for name, row in probed.items())
        print(f"decision probe AUC (P(search), search-required vs search-free): {aucs}")
    paper = summary.get("paper")
    if paper and paper.get("checks") is not None:
        checks = paper["checks"]
        failed = [k for k, v in checks.items() if k != "met" and not v]
        verdict = "met" if checks["met"] else "not met; short of " + ", ".join(failed)
        print(f"RL learns when to search from a need-blind start: {verdict}")
    training = summary.get("training")
    if training and "probe_reward" in training:
        steps = ", ".join(
            f"step {s} {r:.3f}"
            for s, r in zip(training["probe_steps"], training["probe_reward"], strict=True)
        )
        print(f"probe reward ({training['probe_questions']}): {steps}")
    if training and "reward_mean_first_half" in training:
        print(
            f"training reward: steps 1-{training['steps'] // 2} "
            f"{training['reward_mean_first_half']:.3f}, the rest "
            f"{training['reward_mean_second_half']:.3f} "
            f"(trend {training['reward_trend_per_step']:+.4f} a step)"
        )


def _cmd_demo(args: Any) -> int:
    overrides = DemoConfig.grpo_overrides
    if args.steps is not None:  # later overrides win
        overrides = (
            *overrides,
            "--run.steps",
            str(args.steps),
            "--run.save_every",
            str(args.steps),
        )
    cfg = DemoConfig(
        out=args.out,
        seed=args.seed,
        warmstart=args.warmstart,
        grpo_overrides=overrides,
        rl_balance=args.rl_balance,
        eval_limit=args.limit,
        ablations=args.ablations,
        paper_ablations=args.paper_ablations,
        paper=PaperConfig(warmstart=args.blind_warmstart),
        resume=args.resume,
    )
    summary = run_demo(cfg)
    _print_summary(summary)
    print(
        f"\nreport: {cfg.out / 'report.md'}, {cfg.out / 'report.html'}, {cfg.out / 'summary.json'}"
    )
    from mmsr.inspect import inspect_command

    print(f"read its trajectories in a browser: {inspect_command([cfg.out / 'eval'])}")
    return 0


def _share_or_none(text: str) -> float | None:
    if text.strip().lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a share between 0 and 1, or none: {text!r}") from None


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("demo", help="the whole pipeline in miniature, offline (make demo)")
    p.add_argument("--out", type=Path, default=DemoConfig.out, help="output folder")
    p.add_argument("--seed", type=int, default=DemoConfig.seed, help="world and run seed")
    p.add_argument("--warmstart", type=Path, default=WARMSTART_DIR, help="warm-start model folder")
    p.add_argument("--steps", type=int, default=None, help="GRPO steps (default: 12)")
    p.add_argument("--limit", type=int, default=None, help="evaluate on the first N test questions")
    p.add_argument(
        "--rl-balance",
        type=_share_or_none,
        default=DemoConfig.rl_balance,
        metavar="SHARE",
        help="train GRPO on the largest train subset with this share of search-required "
        "questions (default 0.5: the paper's search-balanced RL data; 'none': the whole train "
        "split)",
    )
    p.add_argument(
        "--ablations",
        action="store_true",
        help="also GRPO without the search penalty and the warm start trained on with SFT for "
        "as long as GRPO ran (about 10 minutes more on 2 cores)",
    )
    p.add_argument(
        "--paper-ablations",
        action="store_true",
        help="also the paper's mechanism from a need-blind warm start: GRPO from it (the "
        "decision probe over steps), SFT on need-labelled data for as long, GRPO on unbalanced "
        "data (about 2.5 hours more on 2 cores)",
    )
    p.add_argument(
        "--blind-warmstart",
        type=Path,
        default=BLIND_WARMSTART_DIR,
        help="the need-blind warm-start model folder (--paper-ablations)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="go on with a cut run in --out: keep finished stages, resume GRPO and evaluations",
    )
    p.set_defaults(func=_cmd_demo)
