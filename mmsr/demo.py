"""``mmsr demo``: the paper's result in miniature, offline, on a laptop.

Builds the offline world, indexes it, loads the committed warm-start checkpoint (a tiny
Qwen2.5-VL taught by SFT to use the protocol), runs GRPO with the search penalty for a fixed
budget, evaluates on the world's held-out test split — ``direct``, ``rag``,
``on_demand_warmstart``, ``on_demand_rl`` and ``oracle`` — and writes ``OUT/report.md``,
``OUT/report.html`` (plots: reward and search ratio over training steps; accuracy vs search
ratio per method) and ``OUT/summary.json``. Every stage is one of the ``mmsr`` commands, run
in-process, so the demo is exactly what a user can run step by step.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

WARMSTART_DIR = Path(__file__).parent / "assets" / "warmstart-tiny"

# Demo method name -> (eval method, which model: the warm start or the RL result).
METHODS: dict[str, tuple[str, str]] = {
    "direct": ("direct", "warmstart"),
    "rag": ("rag", "warmstart"),
    "on_demand_warmstart": ("on-demand", "warmstart"),
    "on_demand_rl": ("on-demand", "rl"),
    "oracle": ("oracle", "warmstart"),
}
# The paper's ablations in miniature (``mmsr demo --ablations``): the same GRPO budget and seed
# without the search penalty, and the warm start trained on with SFT for as long as GRPO ran.
ABLATIONS: dict[str, tuple[str, str]] = {
    "on_demand_rl_no_penalty": ("on-demand", "rl_no_penalty"),
    "sft_more": ("on-demand", "sft_more"),
}
ALL_METHODS: dict[str, tuple[str, str]] = {**METHODS, **ABLATIONS}


@dataclass(frozen=True)
class DemoConfig:
    """What the demo runs; the defaults are the documented laptop budget."""

    out: Path = Path("runs/demo")
    """Where everything goes (world, index, training run, evaluations, report)."""
    seed: int = 7
    """World seed; training and evaluation seeds derive from it."""
    warmstart: Path = WARMSTART_DIR
    """The SFT warm-start model folder."""
    grpo_preset: str = "tiny-cpu"
    """GRPO preset; the demo points it at the world, the index and the warm start."""
    grpo_overrides: tuple[str, ...] = (
        *("--run.steps", "8", "--run.save_every", "4", "--optim.lr", "1e-4"),
    )
    """``--section.field value`` overrides for GRPO: the laptop step budget (the preset's 30
    steps take about 13 minutes on 2 cores, past the demo's 15-minute budget) and a learning
    rate that moves a 5 M-parameter policy within it (the preset's 2e-5 barely does in 8 steps)."""
    eval_limit: int | None = None
    """Evaluate on the first N test questions only (None: the whole test split)."""
    eval_batch_size: int = 48
    """Rollouts per policy call during evaluation."""
    eval_max_new_tokens: int | None = None
    """Longest assistant turn in evaluation (None: the eval command's default)."""
    methods: tuple[str, ...] = field(default=tuple(METHODS))
    """Which of the demo's methods to evaluate."""
    small_world: bool = False
    """Build the reduced world (for tests and quick looks)."""
    ablations: bool = False
    """Also train and evaluate ``ABLATIONS`` (about an hour more on 2 cores)."""
    sft_minutes: float | None = None
    """``sft_more``'s training time (None: as long as the GRPO stage took)."""

    def all_methods(self) -> tuple[str, ...]:
        """The methods evaluated: ``methods``, then the ablations when asked for."""
        return (*self.methods, *(ABLATIONS if self.ablations else ()))


def run_cli(argv: Sequence[str]) -> None:
    """Run one ``mmsr`` command in-process; a non-zero exit is an error."""
    from mmsr.cli import build_parser

    parser = build_parser()
    args, rest = parser.parse_known_args(list(argv))
    if getattr(args, "takes_overrides", False):
        args.overrides = rest
    elif rest:
        parser.error(f"unrecognised arguments: {' '.join(rest)}")
    code = int(args.func(args) or 0)
    if code != 0:
        raise RuntimeError(f"'mmsr {' '.join(argv)}' failed with exit code {code}")


def _stage(name: str, timings: dict[str, float], argv: Sequence[str]) -> None:
    logger.info("demo: %s", name)
    start = time.perf_counter()
    run_cli(argv)
    timings[name] = round(time.perf_counter() - start, 1)


def _latest_model(run: Path) -> Path:
    steps = sorted((run / "checkpoints").glob("step_*"))
    if not steps:
        raise RuntimeError(f"{run}: GRPO wrote no checkpoint")
    return steps[-1] / "model"


def keep_previous_run(out: Path) -> Path | None:
    """Move an earlier demo's training run and evaluations out of the way (never delete them).

    They go to ``out/previous/<UTC time>/``; a rerun then trains and evaluates afresh (the
    evaluations resume from what they find, so old rollouts must not be left in place).
    """
    names = ("grpo", "grpo_no_penalty", "sft_more", "eval")
    stale = [out / name for name in names if (out / name).exists()]
    if not stale:
        return None
    keep = out / "previous" / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    keep.mkdir(parents=True, exist_ok=True)
    for path in stale:
        path.rename(keep / path.name)
    logger.info("kept the previous demo run in %s", keep)
    return keep


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Run every stage (see the module docstring); returns the summary."""
    if not (cfg.warmstart / "config.json").is_file():
        raise ValueError(f"{cfg.warmstart}: no warm-start model (config.json missing)")
    out, timings = cfg.out, dict[str, float]()
    keep_previous_run(out)
    world, index, grpo = out / "world", out / "index", out / "grpo"
    world_args = ["world", "build", "--out", str(world), "--seed", str(cfg.seed)]
    _stage("world", timings, [*world_args, *(["--small"] if cfg.small_world else [])])
    _stage(
        "index", timings, ["index", "build", "--corpus", str(world / "corpus"), "--out", str(index)]
    )
    overrides = [
        *("--model.path", str(cfg.warmstart), "--data.train", str(world / "train.parquet")),
        *("--search.spec", f"local:{index}", "--search.cache", "none", "--run.seed", str(cfg.seed)),
        *cfg.grpo_overrides,
    ]
    grpo_argv = ["train", "grpo", "--preset", cfg.grpo_preset, *overrides]
    _stage("grpo", timings, [*grpo_argv, "--out", str(grpo)])
    models = {"warmstart": cfg.warmstart, "rl": _latest_model(grpo)}
    if cfg.ablations:
        models.update(_run_ablations(cfg, grpo_argv, timings))
    for name in cfg.all_methods():
        method, which = ALL_METHODS[name]
        argv = [
            *("eval", "--policy", f"hf:{models[which]}", "--method", method),
            *("--data", str(world / "test.parquet"), "--search", f"local:{index}"),
            *("--out", str(out / "eval" / name), "--benchmark", "world", "--seed", str(cfg.seed)),
            *("--batch-size", str(cfg.eval_batch_size)),
            *(["--limit", str(cfg.eval_limit)] if cfg.eval_limit else []),
            *(
                ["--max-new-tokens", str(cfg.eval_max_new_tokens)]
                if cfg.eval_max_new_tokens
                else []
            ),
        ]
        _stage(f"eval/{name}", timings, argv)
    from mmsr.demo_report import write_demo_report

    summary = write_demo_report(out, cfg.all_methods(), grpo, timings)
    summary["config"] = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return summary


def warmstart_recipe(warmstart: Path) -> list[str]:
    """``mmsr train sft`` options that continue ``warmstart`` with its own teacher mixture.

    Read from the ``sft_config.json`` the warm start was saved with (a mixture saved before a
    teacher kind existed names the kinds of its time: ``teacher_config.saved_weights``). A folder
    without one continues with the preset's mixture.
    """
    from mmsr.train.teacher_config import COPY_ENTITIES, saved_weights, weights_text

    path = warmstart / "sft_config.json"
    if not path.is_file():
        return []
    saved = json.loads(path.read_text(encoding="utf-8"))
    teacher = saved.get("teacher", {})
    argv: list[str] = []
    if teacher.get("weights"):
        argv += ["--weights", weights_text(saved_weights(teacher["weights"]))]
    if "head_direct" in teacher:
        argv += ["--head-direct", str(float(teacher["head_direct"]))]
    if teacher.get("copy_entities") in COPY_ENTITIES:
        argv += ["--copy-entities", str(teacher["copy_entities"])]
    if "lr" in saved:
        argv += ["--lr", str(float(saved["lr"]))]
    return argv


def _run_ablations(
    cfg: DemoConfig, grpo_argv: list[str], timings: dict[str, float]
) -> dict[str, Path]:
    """Train the ablations' policies; returns their model folders by ``ABLATIONS`` key."""
    out = cfg.out
    no_penalty = out / "grpo_no_penalty"
    argv = [*grpo_argv, "--algo.search_penalty", "0", "--out", str(no_penalty)]
    _stage("grpo_no_penalty", timings, argv)
    minutes = cfg.sft_minutes if cfg.sft_minutes is not None else timings["grpo"] / 60.0
    sft_more = out / "sft_more"
    argv = [
        *("train", "sft", "--world", str(out / "world"), "--index", str(out / "index")),
        *("--out", str(sft_more), "--init", str(cfg.warmstart), "--seed", str(cfg.seed)),
        *("--minutes", f"{minutes:.3f}", "--primer-steps", "0", "--eval-every", "0"),
        *("--final-questions", "2", "--quiet"),
        *warmstart_recipe(cfg.warmstart),
    ]
    _stage("sft_more", timings, argv)
    return {"rl_no_penalty": _latest_model(no_penalty), "sft_more": sft_more}


def _print_summary(summary: dict[str, Any]) -> None:
    nan = float("nan")
    print(f"\n{'method':<22} {'accuracy':>9} {'search ratio':>13} {'SR free':>8} "
          f"{'SR required':>12} {'precision':>10} {'recall':>7}")  # fmt: skip
    for name, row in summary["methods"].items():
        print(
            f"{name:<22} {100 * row['accuracy']:>8.1f}% {100 * row['search_ratio']:>12.1f}% "
            f"{100 * row.get('search_ratio/search_free', nan):>7.1f}% "
            f"{100 * row.get('search_ratio/search_required', nan):>11.1f}% "
            f"{row.get('search_precision', nan):>10.2f} {row.get('search_recall', nan):>7.2f}"
        )
    target = summary.get("target")
    if target is not None:
        print(f"\ntarget (on_demand_rl ≥ rag accuracy, ≤ 0.7 × rag search ratio): "
              f"{'met' if target['met'] else 'not met'}")  # fmt: skip
    decision = summary.get("decision")
    if decision is not None:
        failed = [k for k, v in decision.items() if k != "met" and not v]
        verdict = "met" if decision["met"] else "not met; short of " + ", ".join(failed)
        print(f"search decision (issue #11 criteria): {verdict}")


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
        eval_limit=args.limit,
        ablations=args.ablations,
    )
    summary = run_demo(cfg)
    _print_summary(summary)
    print(
        f"\nreport: {cfg.out / 'report.md'}, {cfg.out / 'report.html'}, {cfg.out / 'summary.json'}"
    )
    from mmsr.inspect import inspect_command

    print(f"read its trajectories in a browser: {inspect_command([cfg.out / 'eval'])}")
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("demo", help="the whole pipeline in miniature, offline (make demo)")
    p.add_argument("--out", type=Path, default=DemoConfig.out, help="output folder")
    p.add_argument("--seed", type=int, default=DemoConfig.seed, help="world and run seed")
    p.add_argument("--warmstart", type=Path, default=WARMSTART_DIR, help="warm-start model folder")
    p.add_argument("--steps", type=int, default=None, help="GRPO steps (default: 8)")
    p.add_argument("--limit", type=int, default=None, help="evaluate on the first N test questions")
    p.add_argument(
        "--ablations",
        action="store_true",
        help="also GRPO without the search penalty and the warm start trained on with SFT for "
        "as long as GRPO ran (about an hour more on 2 cores)",
    )
    p.set_defaults(func=_cmd_demo)
