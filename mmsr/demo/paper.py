"""The paper's mechanism in miniature (``mmsr demo --paper-ablations``): RL, not SFT labels,
learns *when* to search.

From a need-blind warm start (``mmsr/assets/warmstart-blind``, trained by the
``warmstart-blind`` recipe: its teacher takes the search path with the same probability for
every picture, and a direct answer about an unknown picture is a guess), four more rows:

- ``on_demand_blind_warmstart``: the blind warm start itself — its search ratio should not
  depend on the need class (gap ≤ 0.10) nor its P(search) (decision-probe AUC ≤ 0.60);
- ``on_demand_rl_from_blind``: GRPO from it on a class-balanced train set, the decision probe
  every ``probe_every`` steps — a guessed answer earns nothing and a searched known answer pays
  the penalty, so reward alone can teach when to search (gap ≥ 0.60, AUC ≥ 0.85, accuracy ≥
  90 % of the main ``on_demand_rl``);
- ``sft_from_blind``: the paper's distillation baseline — SFT from the same warm start on
  need-labelled conversations (search exactly when the question needs it, the oracle's
  choices) for as long as the RL run took;
- ``on_demand_rl_unbalanced``: GRPO from it on a train set skewed to search-required questions
  (the paper's data-balance ablation): how the search ratio drifts without balance.

The train subsets are written into the world folder (``train-balanced.parquet``,
``train-unbalanced.parquet``: the decision probe finds the world's entities beside them). Each
model gets the decision probe on the test split (``OUT/decision/<row>.json``). Every stage
skips what a cut run already finished (``mmsr demo --resume``): GRPO resumes from its newest
checkpoint, evaluations from their written rollouts. Not here: the main demo
(``mmsr.demo.pipeline``), the report's tables (``mmsr.demo.report``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmsr.demo.stages import Stage, grpo_stage, sft_more_stage, trained_grpo

logger = logging.getLogger(__name__)

BLIND_WARMSTART_DIR = Path(__file__).parents[1] / "assets" / "warmstart-blind"

# Summary row -> (eval method, which model).
PAPER_ROWS: dict[str, tuple[str, str]] = {
    "on_demand_blind_warmstart": ("on-demand", "blind"),
    "on_demand_rl_from_blind": ("on-demand", "rl_from_blind"),
    "sft_from_blind": ("on-demand", "sft_from_blind"),
    "on_demand_rl_unbalanced": ("on-demand", "rl_unbalanced"),
}
BALANCED_FILE = "train-balanced.parquet"
UNBALANCED_FILE = "train-unbalanced.parquet"


@dataclass(frozen=True)
class PaperConfig:
    """The paper ablations' budget; the defaults fit about 2.5 hours on 2 cores."""

    warmstart: Path = BLIND_WARMSTART_DIR
    """The need-blind warm start (``mmsr train warmstart --recipe warmstart-blind``)."""
    steps: int = 120
    """GRPO steps of the run from the blind warm start."""
    unbalanced_steps: int = 60
    """GRPO steps of the unbalanced run (its drift shows early; compare at equal steps)."""
    probe_every: int = 10
    """The decision probe's interval in both runs (steps)."""
    balanced_ratio: float = 0.5
    """Share of search-required questions in the balanced train set."""
    unbalanced_ratio: float = 0.9
    """Share of search-required questions in the unbalanced one (web-crawled VQA is mostly
    about things a model does not know)."""
    sft_minutes: float | None = None
    """``sft_from_blind``'s training time (None: as long as the RL run from it took)."""
    grpo_overrides: tuple[str, ...] = (
        *("--optim.lr", "1e-4", "--algo.prompts_per_step", "8"),
        *("--algo.skip_zero_advantage", "true", "--rollout.temperature", "0.7"),
    )
    """GRPO overrides shared by both runs (the main demo's rate, prompts per step and rollout
    temperature)."""


def check_blind_warmstart(warmstart: Path, main: Path) -> None:
    """Refuse a missing blind warm start, or one trained on another kind of world than the
    main warm start (both are evaluated on one world)."""
    from mmsr.teacher.world_kit import trained_world

    if not (warmstart / "config.json").is_file():
        raise ValueError(
            f"{warmstart}: no need-blind warm start (config.json missing); train one with "
            "'mmsr train warmstart --recipe warmstart-blind --world W --index IDX --out DIR'"
        )
    mine, theirs = trained_world(warmstart), trained_world(main)
    if mine != theirs:
        raise ValueError(
            f"{warmstart} was trained on a world with {mine}, the main warm start on {theirs}: "
            "the ablations need one world"
        )


def subset_file(ratio: float) -> str:
    """The world folder's file of the train subset with this share of search-required
    questions: the paper ablations' two by name, any other by its share."""
    named = {
        PaperConfig.balanced_ratio: BALANCED_FILE,
        PaperConfig.unbalanced_ratio: UNBALANCED_FILE,
    }
    return named.get(ratio, f"train-rl-{ratio:g}.parquet")


def rl_subset(world: Path, ratio: float, seed: int) -> Path:
    """``write_subset`` of the world's train split into ``world / subset_file(ratio)``."""
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"the share of search-required questions is between 0 and 1, not {ratio}")
    return write_subset(world / "train.parquet", ratio, seed, world / subset_file(ratio))


def write_subset(train: Path, ratio: float, seed: int, out: Path) -> Path:
    """The largest subset of ``train`` whose share of search-required questions is ``ratio``
    (``mmsr.data.balance.sample_to_ratio``), as the train file's own rows; kept when there."""
    if out.is_file():
        return out
    from mmsr.data import load_samples
    from mmsr.data.balance import sample_to_ratio
    from mmsr.data.export import write_rows_of

    samples = load_samples(train)
    picked = sample_to_ratio(samples, ratio, seed)
    write_rows_of(train, picked, out)
    logger.info("%s: %d of %d questions, %.0f %% search-required", out, len(picked),
                len(samples), 100 * ratio)  # fmt: skip
    return out


def run_paper_ablations(
    paper: PaperConfig,
    *,
    out: Path,
    seed: int,
    main_warmstart: Path,
    grpo_preset: str,
    grpo_settings: Callable[[Path, Path], dict[str, Any]],
    run_stage: Callable[[Stage], Any],
    timings: dict[str, float],
) -> dict[str, Path]:
    """Train the rows' models (skipping what is finished); returns them by ``PAPER_ROWS``
    model key. ``grpo_settings(model, train)``: the demo's GRPO settings for a model and a
    train file; ``run_stage`` runs and times one stage."""
    check_blind_warmstart(paper.warmstart, main_warmstart)
    world = out / "world"
    balanced = rl_subset(world, paper.balanced_ratio, seed)
    skewed = rl_subset(world, paper.unbalanced_ratio, seed)
    models: dict[str, Path] = {"blind": paper.warmstart}
    runs = (
        ("grpo_from_blind", "rl_from_blind", balanced, paper.steps),
        ("grpo_unbalanced", "rl_unbalanced", skewed, paper.unbalanced_steps),
    )
    for name, key, data, steps in runs:
        overrides = (
            *paper.grpo_overrides,
            *("--run.steps", str(steps), "--run.save_every", str(max(1, steps // 4))),
            *("--run.probe_every", str(paper.probe_every)),
        )
        settings = grpo_settings(paper.warmstart, data)
        stage = grpo_stage(name, grpo_preset, settings, overrides, out / name)
        models[key] = trained_grpo(stage, out / name, run_stage)
    sft = out / "sft_from_blind"
    if not (sft / "model.safetensors").is_file():
        minutes = paper.sft_minutes
        if minutes is None:
            minutes = run_minutes(out / "grpo_from_blind", timings)
        # the oracle's choices: head questions answered directly, tail ones searched
        need = {"decision": "need", "head_direct": 1.0}
        stage = sft_more_stage(
            world, out / "index", paper.warmstart, seed, minutes, sft,
            name="sft_from_blind", teacher=need,
        )  # fmt: skip
        run_stage(stage)
    models["sft_from_blind"] = sft
    return models


def run_minutes(run: Path, timings: dict[str, float]) -> float:
    """How long the GRPO run in ``run`` took, in minutes: its stage's time in ``timings``, or
    when it ran in an earlier, cut demo the sum of its steps' times."""
    if run.name in timings:
        return timings[run.name] / 60.0
    from mmsr.demo.report import read_training

    seconds = sum(float(row.get("perf/step_s", 0.0)) for row in read_training(run))
    return max(seconds / 60.0, 0.01)


def _gap(row: dict[str, Any]) -> float:
    nan = float("nan")
    required = float(row.get("search_ratio/search_required", nan))
    return required - float(row.get("search_ratio/search_free", nan))


def paper_check(
    methods: dict[str, dict[str, Any]], decisions: dict[str, dict[str, Any]]
) -> dict[str, Any] | None:
    """The issue's bars: the blind warm start's search-ratio gap ≤ 0.10 and decision AUC ≤
    0.60; RL from it: gap ≥ 0.60, AUC ≥ 0.85 and accuracy ≥ 90 % of ``on_demand_rl``'s.
    ``met`` is all of them; None until the rows exist."""
    blind, rl = methods.get("on_demand_blind_warmstart"), methods.get("on_demand_rl_from_blind")
    if blind is None or rl is None:
        return None
    nan = float("nan")
    auc = {k: float(v.get("auc", nan)) for k, v in decisions.items()}
    checks = {
        "blind_warmstart_gap_at_most_0.10": _gap(blind) <= 0.10,
        "blind_warmstart_auc_at_most_0.60": auc.get("on_demand_blind_warmstart", nan) <= 0.60,
        "rl_from_blind_gap_at_least_0.60": _gap(rl) >= 0.60,
        "rl_from_blind_auc_at_least_0.85": auc.get("on_demand_rl_from_blind", nan) >= 0.85,
    }
    if "on_demand_rl" in methods:
        checks["rl_from_blind_accuracy_at_least_0.9_on_demand_rl"] = (
            rl["accuracy"] >= 0.9 * methods["on_demand_rl"]["accuracy"]
        )
    return {**checks, "met": all(checks.values())}


def paper_summary(
    out: Path,
    methods: dict[str, dict[str, Any]],
    names: Sequence[str],
    decisions: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """The ``paper`` part of the summary: per row its per-class search ratios and their gap,
    the decision probe's AUC and mean P(search) per class on the test split (``decisions``, by
    row), and the probes' curves of both GRPO runs by step."""
    from mmsr.demo.report import decision_curve, read_training

    rows: dict[str, dict[str, Any]] = {}
    for name in names:
        row, probe = methods.get(name, {}), decisions.get(name, {})
        rows[name] = {
            "accuracy": row.get("accuracy"),
            "search_ratio/search_free": row.get("search_ratio/search_free"),
            "search_ratio/search_required": row.get("search_ratio/search_required"),
            "gap": _round(_gap(row)),
            "reward": row.get("reward"),
            "decision_auc": _round(probe.get("auc", float("nan"))),
            "p_search/head": _round(probe.get("head", {}).get("p_search", float("nan"))),
            "p_search/tail": _round(probe.get("tail", {}).get("p_search", float("nan"))),
        }
    curves = {}
    for run in ("grpo_from_blind", "grpo_unbalanced"):
        probes = read_training(out / run, "probe.jsonl")
        if probes:
            curves[run] = {"steps": [int(r["step"]) for r in probes], **decision_curve(probes)}
    return {"rows": rows, "curves": curves, "checks": paper_check(methods, decisions)}


def _round(value: float) -> float | None:
    return None if value is None or math.isnan(value) else round(value, 3)


def paper_plots(out: Path) -> dict[str, str]:
    """The decision probe over the RL run from the blind warm start, and the search ratio per
    need class of the balanced and the unbalanced runs over steps (base64 PNGs by title)."""
    from mmsr.demo.report import _png, decision_plot, read_training

    plots: dict[str, str] = {}
    blind = read_training(out / "grpo_from_blind", "probe.jsonl")
    if blind:
        plots["RL from the need-blind warm start: who decides, over steps"] = decision_plot(
            blind, "RL from a need-blind warm start: the decision probe"
        )
    skewed = read_training(out / "grpo_unbalanced", "probe.jsonl")
    if blind and skewed:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        for probes, label, style in ((blind, "balanced", "-"), (skewed, "unbalanced", "--")):
            steps = [r["step"] for r in probes]
            for key, need in (("search_free", "search-free"), ("search_required", "required")):
                values = [r.get(f"probe/search/ratio/{key}", float("nan")) for r in probes]
                ax.plot(steps, values, style, marker="o", label=f"{label}: SR {need}")
        ax.set_xlabel("GRPO step")
        ax.set_ylabel("greedy search ratio (probe)")
        ax.set_ylim(-0.05, 1.05)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        ax.set_title("Data balance: the search ratio's drift")
        plots["Data balance: the search ratio per need class over steps"] = _png(fig)
        plt.close(fig)
    return plots


def paper_markdown(paper: dict[str, Any]) -> str:
    """The ``paper`` summary as a markdown section."""
    lines = [
        "",
        "## RL learns when to search (from a need-blind warm start)",
        "",
        "| row | accuracy | SR search-free | SR search-required | gap | decision AUC | "
        "P(search) head | P(search) tail |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def cell(value: Any, scale: float = 1.0, digits: int = 3) -> str:
        return "–" if value is None else f"{scale * value:.{digits}f}"

    for name, row in paper["rows"].items():
        lines.append(
            f"| {name} | {cell(row['accuracy'], 100, 1)} | "
            f"{cell(row['search_ratio/search_free'], 100, 1)} | "
            f"{cell(row['search_ratio/search_required'], 100, 1)} | {cell(row['gap'])} | "
            f"{cell(row['decision_auc'])} | {cell(row['p_search/head'])} | "
            f"{cell(row['p_search/tail'])} |"
        )
    checks = paper.get("checks")
    if checks is not None:
        failed = [k for k, v in checks.items() if k != "met" and not v]
        verdict = "met" if checks["met"] else "not met"
        tail = f" (short of: {', '.join(failed)})." if failed else "."
        lines += [
            "",
            "Blind warm start gap ≤ 0.10 and AUC ≤ 0.60; RL from it gap ≥ 0.60, AUC ≥ 0.85, "
            f"accuracy ≥ 90 % of on_demand_rl: **{verdict}**{tail}",
        ]
    return "\n".join(lines) + "\n"
