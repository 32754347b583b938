"""The demo's pipeline: the paper's result in miniature, offline, on a laptop (``mmsr demo``).

Builds the offline world, indexes it, loads the committed warm-start checkpoint (a tiny
Qwen2.5-VL taught by SFT to use the protocol), runs GRPO with the search penalty for a fixed
budget, evaluates on the world's held-out test split — ``direct``, ``rag``,
``on_demand_warmstart``, ``on_demand_rl`` and ``oracle`` — and writes ``OUT/report.md``,
``OUT/report.html`` (plots: reward and search ratio over training steps; accuracy vs search
ratio per method) and ``OUT/summary.json``. Every stage calls the function one of the ``mmsr``
commands calls (``mmsr.demo.stages``) and logs that command, so the demo is exactly what a
user can run step by step. Not here: the command line (``mmsr.demo.cli``), the report
(``mmsr.demo.report``).
"""

from __future__ import annotations

import json
import logging
import shlex
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mmsr.demo.paper import PAPER_ROWS, PaperConfig
from mmsr.demo.report import DECISION_DIR
from mmsr.demo.stages import (
    Stage,
    decision_stage,
    eval_stage,
    grpo_stage,
    index_stage,
    sft_more_stage,
    trained_grpo,
    world_stage,
)
from mmsr.eval.config import EvalRunConfig
from mmsr.rollout.rules import RolloutLimits

logger = logging.getLogger(__name__)

WARMSTART_DIR = Path(__file__).parents[1] / "assets" / "warmstart-tiny"

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
ALL_METHODS: dict[str, tuple[str, str]] = {**METHODS, **ABLATIONS, **PAPER_ROWS}
# The rows whose model gets the decision probe on the test split (``OUT/decision/``): who
# makes the search decision, before and after RL.
PROBED: tuple[str, ...] = ("on_demand_warmstart", "on_demand_rl", *PAPER_ROWS)


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
        *("--run.steps", "12", "--run.save_every", "6", "--optim.lr", "1e-4"),
        *("--algo.prompts_per_step", "8", "--algo.skip_zero_advantage", "true"),
        *("--run.probe_every", "4", "--rollout.temperature", "0.7"),
    )
    """``--section.field value`` overrides for GRPO: the laptop step budget (12 steps of 8 × 8
    rollouts, the groups whose rewards all agree left out of the update, took about 4 minutes
    on a quiet 2-core machine with the probes; with the five evaluations the demo took 11.5
    minutes, where the preset's 30 steps would pass its 12-minute budget), a learning rate that
    moves a 5 M-parameter policy within it (the preset's 2e-5 barely does; 2e-4 raised the
    search-free ratio faster), the greedy probe on 64 fixed training questions every 4 steps (a
    step's own reward mixes other questions each step), and rollouts sampled at temperature
    0.7. Measured on the warm start's 200 validation questions (train questions), the same run
    at the preset's 1.0 ended at accuracy 0.89, search ratio 0.25 on search-free and 0.89 on
    search-required questions, and its twin without the penalty fell to 0.80 accuracy; at 0.7:
    0.915, 0.21 and 0.91, the twin 0.94 searching 13 points more search-free questions."""
    rl_balance: float | None = 0.5
    """Train the demo's GRPO runs on the largest subset of the train split whose share of
    search-required questions is this (0.5: the paper's search-balanced RL data; the file is
    ``world/train-balanced.parquet``, or ``train-rl-<share>.parquet`` for another share);
    None: the whole train split (65 % search-required), where RL drifts towards searching."""
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
    """Also train and evaluate ``ABLATIONS`` (about 10 minutes more on 2 cores)."""
    sft_minutes: float | None = None
    """``sft_more``'s training time (None: as long as the GRPO stage took)."""
    paper_ablations: bool = False
    """Also the paper's mechanism from a need-blind warm start (``mmsr.demo.paper``: RL vs
    SFT from it, balanced vs unbalanced data; about 2.5 hours more on 2 cores)."""
    paper: PaperConfig = field(default_factory=PaperConfig)
    """The paper ablations' warm start and budget."""
    resume: bool = False
    """Go on with a cut run in ``out``: finished stages are kept, GRPO resumes from its newest
    checkpoint, evaluations from their rollouts (without it an earlier run is moved aside)."""

    def all_methods(self) -> tuple[str, ...]:
        """The methods evaluated: ``methods``, then the ablations when asked for."""
        return (
            *self.methods,
            *(ABLATIONS if self.ablations else ()),
            *(PAPER_ROWS if self.paper_ablations else ()),
        )


def _stage(stage: Stage, timings: dict[str, float]) -> Any:
    """Run one stage, logging the ``mmsr`` command that does the same by hand."""
    logger.info("demo: %s: mmsr %s", stage.name, shlex.join(stage.command))
    start = time.perf_counter()
    result = stage.run()
    timings[stage.name] = round(time.perf_counter() - start, 1)
    return result


def keep_previous_run(out: Path) -> Path | None:
    """Move an earlier demo's training run and evaluations out of the way (never delete them).

    They go to ``out/previous/<UTC time>/``; a rerun then trains and evaluates afresh (the
    evaluations resume from what they find, so old rollouts must not be left in place).
    """
    names = (
        *("grpo", "grpo_no_penalty", "sft_more", "eval", DECISION_DIR),
        *("grpo_from_blind", "grpo_unbalanced", "sft_from_blind"),
    )
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
    if not cfg.resume:
        keep_previous_run(out)
    world, index, grpo = out / "world", out / "index", out / "grpo"
    from mmsr.teacher.world_kit import trained_world

    trained = trained_world(cfg.warmstart)  # the world the warm start learnt to read
    _stage(world_stage(world, cfg.seed, cfg.small_world, trained["fact_layout"]), timings)
    _stage(index_stage(world / "corpus", index, trained["summary_order"]), timings)
    if cfg.rl_balance is not None:
        from mmsr.demo.paper import rl_subset

        rl_subset(world, cfg.rl_balance, cfg.seed)
    rl = _train_grpo("grpo", cfg, cfg.grpo_overrides, grpo, timings)
    models = {"warmstart": cfg.warmstart, "rl": rl}
    if cfg.ablations:
        models.update(_run_ablations(cfg, timings))
    if cfg.paper_ablations:
        from mmsr.demo.paper import run_paper_ablations

        models |= run_paper_ablations(
            cfg.paper,
            out=out,
            seed=cfg.seed,
            main_warmstart=cfg.warmstart,
            grpo_preset=cfg.grpo_preset,
            grpo_settings=lambda model, train: _grpo_settings(cfg, model, train),
            run_stage=lambda stage: _stage(stage, timings),
            timings=timings,
        )
    for name in cfg.all_methods():
        method, which = ALL_METHODS[name]
        run = _eval_config(cfg, method, models[which], out / "eval" / name)
        _stage(eval_stage(name, run), timings)
    for name in (n for n in PROBED if n in cfg.all_methods()):
        model = models[ALL_METHODS[name][1]]
        probe = out / DECISION_DIR / f"{name}.json"
        _stage(decision_stage(name, model, world, probe, cfg.eval_limit), timings)
    from mmsr.demo.report import write_demo_report

    summary = write_demo_report(out, cfg.all_methods(), grpo, timings, paper=cfg.paper_ablations)
    summary["config"] = _plain(asdict(cfg))
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return summary


def _plain(value: Any) -> Any:
    """``value`` with every path (nested ones too) as its text: JSON-ready."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value) if isinstance(value, Path) else value


def _train_grpo(
    name: str, cfg: DemoConfig, overrides: tuple[str, ...], run: Path, timings: dict[str, float]
) -> Path:
    """One of the demo's GRPO runs from the main warm start; returns its last model (a run
    finished before is kept, a cut one resumed: only ``--resume`` leaves them in place)."""
    stage = grpo_stage(name, cfg.grpo_preset, _grpo_settings(cfg), overrides, run)
    return trained_grpo(stage, run, lambda s: _stage(s, timings))


def _grpo_settings(
    cfg: DemoConfig, model: Path | None = None, train: Path | None = None
) -> dict[str, Any]:
    """What the demo sets in the GRPO preset (``grpo_overrides`` still win over it): the
    warm start (or ``model``) trained on the world's train split (or ``train``)."""
    world = cfg.out / "world"
    if train is None and cfg.rl_balance is not None:
        from mmsr.demo.paper import subset_file

        train = world / subset_file(cfg.rl_balance)
    return {
        "model": {"path": str(model or cfg.warmstart)},
        "data": {"train": str(train or world / "train.parquet")},
        "search": {"spec": f"local:{cfg.out / 'index'}", "cache": "none"},
        "run": {"seed": cfg.seed},
    }


def _eval_config(cfg: DemoConfig, method: str, model: Path, out: Path) -> EvalRunConfig:
    """One evaluation of the demo: ``model`` with ``method`` on the world's test split."""
    return EvalRunConfig(
        policy=f"hf:{model}",
        method=method,
        data=cfg.out / "world" / "test.parquet",
        out=out,
        search=f"local:{cfg.out / 'index'}",
        benchmark="world",
        seed=cfg.seed,
        batch_size=cfg.eval_batch_size,
        limit=cfg.eval_limit or None,
        limits=RolloutLimits(
            max_new_tokens=cfg.eval_max_new_tokens or RolloutLimits.max_new_tokens
        ),
    )


def _run_ablations(cfg: DemoConfig, timings: dict[str, float]) -> dict[str, Path]:
    """Train the ablations' policies; returns their model folders by ``ABLATIONS`` key."""
    out = cfg.out
    no_penalty = out / "grpo_no_penalty"
    overrides = (*cfg.grpo_overrides, "--reward.search_penalty", "0")  # last: it wins
    rl_no_penalty = _train_grpo("grpo_no_penalty", cfg, overrides, no_penalty, timings)
    sft_more = out / "sft_more"
    if not (cfg.resume and (sft_more / "model.safetensors").is_file()):
        from mmsr.demo.paper import run_minutes

        minutes = (
            cfg.sft_minutes if cfg.sft_minutes is not None else run_minutes(out / "grpo", timings)
        )
        world, index = out / "world", out / "index"
        stage = sft_more_stage(world, index, cfg.warmstart, cfg.seed, minutes, sft_more)
        _stage(stage, timings)
    return {"rl_no_penalty": rl_no_penalty, "sft_more": sft_more}
