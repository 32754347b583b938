"""The demo's stages as typed calls, each with the ``mmsr`` command line that does the same.

A ``Stage`` pairs a call of the function a command runs (``build_world``, ``build_index``,
``train_grpo``, ``train_sft``, ``run_eval``) with that command's arguments, which the demo
logs so that a user can rerun one stage by hand. The builders here make both from the same
values; the tests parse each command line with the real CLI and compare the configs. Not here:
the order of the stages (``mmsr.demo.pipeline``) and the report (``mmsr.demo.report``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from mmsr.config import to_overrides
from mmsr.eval.config import EvalRunConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stage:
    """One step of the demo: what to run and the command that runs it by hand."""

    name: str
    """The stage's name in logs and timings (``grpo``, ``eval/rag``, ...)."""
    command: tuple[str, ...]
    """The ``mmsr`` arguments doing the same (without the leading ``mmsr``)."""
    run: Callable[[], Any]
    """The typed call."""
    config: Any = None
    """The config the call runs with (None for world and index), for the tests."""


def world_stage(out: Path, seed: int, small: bool, fact_layout: str = "brief") -> Stage:
    """``mmsr world build``: the offline world, its facts stated as ``fact_layout`` says."""

    def run() -> Any:
        from mmsr.world.build import BuildConfig, build_world

        config = BuildConfig(
            out=out, seed=seed, small=small, fact_layout=fact_layout, progress=True
        )
        return build_world(config)

    command = ["world", "build", "--out", str(out), "--seed", str(seed)]
    command += ["--small"] if small else []
    command += ["--fact-layout", fact_layout] if fact_layout != "brief" else []
    return Stage("world", tuple(command), run)


def index_stage(corpus: Path, out: Path, summary_order: str = "page") -> Stage:
    """``mmsr index build``: the local search index of the world's corpus, its pictures
    embedded with the packaged image engine (the command's default)."""

    def run() -> Any:
        from mmsr.assets import IMAGE_ENGINE
        from mmsr.search.local.index import build_index

        return build_index(
            corpus, out, progress=True, engine=IMAGE_ENGINE, summary_order=summary_order
        )

    command = ["index", "build", "--corpus", str(corpus), "--out", str(out)]
    command += ["--summary-order", summary_order] if summary_order != "page" else []
    return Stage("index", tuple(command), run)


def grpo_stage(
    name: str, preset: str, settings: dict[str, Any], overrides: tuple[str, ...], out: Path
) -> Stage:
    """``mmsr train grpo``: ``preset``, then ``settings``, then ``overrides`` (they win)."""
    from mmsr.train.grpo_config import load_grpo_config

    cfg = load_grpo_config(preset, overrides, settings)  # a bad override fails here, at once

    def run() -> Any:
        from mmsr.train.grpo import train_grpo
        from mmsr.train.grpo_setup import build_parts

        return train_grpo(cfg, build_parts(cfg, out), out)

    command = ("train", "grpo", "--preset", preset, *to_overrides(settings), *overrides)
    return Stage(name, (*command, "--out", str(out)), run, cfg)


# What a continued warm start keeps of its saved ``sft_config.json`` beside the teacher (its
# every setting, the mixture included): how it trains.
TRAINING_KEYS: tuple[str, ...] = ("lr", "decision_weight", "vision_lr_scale")


def warmstart_settings(warmstart: Path) -> dict[str, Any]:
    """SFT settings that continue ``warmstart`` as it was trained: its teacher's mixture and
    every other setting, its rate, decision weight and vision rate.

    Read from the ``sft_config.json`` the warm start was saved with (a mixture saved before a
    teacher kind existed names the kinds of its time: ``mmsr.teacher.config.saved_weights``).
    A folder without one continues with the preset's mixture.
    """
    from mmsr.teacher.config import TeacherConfig, parse_weights, saved_weights, weights_text

    path = warmstart / "sft_config.json"
    if not path.is_file():
        return {}
    saved = json.loads(path.read_text(encoding="utf-8"))
    teacher, settings = saved.get("teacher", {}), dict[str, Any]()
    recipe: dict[str, Any] = {}
    if teacher.get("weights"):
        # through the --weights text (weights to 6 digits), as the logged command gives them
        text = weights_text(saved_weights(teacher["weights"]))
        recipe["weights"] = asdict(parse_weights(text))
    shaping = {f.name for f in fields(TeacherConfig)} - {"weights"}
    recipe |= {key: value for key, value in teacher.items() if key in shaping}
    if recipe:
        settings["teacher"] = recipe
    for key in TRAINING_KEYS:
        if key in saved:
            settings[key] = float(saved[key])
    return settings


def warmstart_recipe(warmstart: Path) -> list[str]:
    """``mmsr train sft`` options giving ``warmstart_settings(warmstart)``."""
    from mmsr.teacher.config import KindWeights, weights_text

    settings = warmstart_settings(warmstart)
    teacher = settings.get("teacher", {})
    argv: list[str] = []
    if "weights" in teacher:
        argv += ["--weights", weights_text(KindWeights(**teacher["weights"]))]
    if "head_direct" in teacher:
        argv += ["--head-direct", str(teacher["head_direct"])]
    if "copy_entities" in teacher:
        argv += ["--copy-entities", teacher["copy_entities"]]
    if "lr" in settings:
        argv += ["--lr", str(settings["lr"])]
    # the settings without an option of their own: the generic overrides
    shaping = {
        k: v for k, v in teacher.items() if k not in ("weights", "head_direct", "copy_entities")
    }
    rest = {k: settings[k] for k in TRAINING_KEYS if k in settings and k != "lr"}
    argv += to_overrides({**rest, **({"teacher": shaping} if shaping else {})})
    return argv


def sft_more_stage(
    world: Path,
    index: Path,
    warmstart: Path,
    seed: int,
    minutes: float,
    out: Path,
    *,
    name: str = "sft_more",
    teacher: dict[str, Any] | None = None,
) -> Stage:
    """``mmsr train sft``: the warm start trained on with its own recipe for ``minutes``
    (``teacher``: settings of the teacher changed from that recipe's, e.g. its decision)."""
    from mmsr.config import merge
    from mmsr.train.sft import load_sft_config

    minutes = float(f"{minutes:.3f}")  # what the command line says
    options = {"seed": seed, "minutes": minutes, "init_from": str(warmstart), "primer_steps": 0}
    options |= {"eval_every_minutes": 0.0, "final_questions": 2}
    changed = {"teacher": teacher} if teacher else {}
    settings = merge(merge(options, warmstart_settings(warmstart)), changed)
    cfg = load_sft_config("tiny-cpu", settings)

    def run() -> Any:
        from mmsr.train.sft import train_sft

        return train_sft(cfg, world, index, out, progress=False)

    command = (
        *("train", "sft", "--world", str(world), "--index", str(index), "--out", str(out)),
        *("--init", str(warmstart), "--seed", str(seed), "--minutes", f"{minutes:.3f}"),
        *("--primer-steps", "0", "--eval-every", "0", "--final-questions", "2", "--quiet"),
        *warmstart_recipe(warmstart),
        *to_overrides(changed),  # last: they win
    )
    return Stage(name, command, run, cfg)


def finished_grpo(run: Path, steps: int) -> Path | None:
    """The model of ``run``'s checkpoint at ``steps``, when the run got there."""
    model = run / "checkpoints" / f"step_{steps:06d}" / "model"
    return model if (model / "config.json").is_file() else None


def trained_grpo(stage: Stage, out: Path, run_stage: Callable[[Stage], Any]) -> Path:
    """The model of ``stage``'s GRPO run in ``out`` at its last step: kept when the run got
    there before, else trained by ``run_stage`` — resumed from the newest checkpoint when
    ``out`` has one (a run cut short goes on where it stopped)."""
    steps = stage.config.run.steps
    done = finished_grpo(out, steps)
    if done is not None:
        logger.info("%s: finished before, kept", stage.name)
        return done
    if (out / "checkpoints").is_dir():
        config = stage.config

        def run() -> Any:
            from mmsr.train.grpo import train_grpo
            from mmsr.train.grpo_setup import build_parts

            return train_grpo(config, build_parts(config, out), out, resume=True)

        stage = Stage(stage.name, (*stage.command, "--resume"), run, config)
    run_stage(stage)
    done = finished_grpo(out, steps)
    if done is None:
        raise RuntimeError(f"{out}: GRPO ended before step {steps}")
    return done


def decision_stage(
    name: str, model: Path, world: Path, out: Path, limit: int | None = None
) -> Stage:
    """The decision probe (``mmsr.train.decision_probe``) of ``model`` on the world's test
    split (its first ``limit`` questions: None, all), into ``out`` (JSON; kept when there)."""

    def run() -> Any:
        if out.is_file():
            return json.loads(out.read_text(encoding="utf-8"))
        from mmsr.data import load_samples
        from mmsr.train.decision_probe import decision_figures, open_probe

        read = open_probe(model, world)
        rows = read(load_samples(world / "test.parquet", limit=limit))
        figures = {"model": str(model), "split": "test", **decision_figures(rows)}
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")
        tmp.replace(out)
        return figures

    command = (
        "bench/decision_probe.py",
        *("--model", str(model), "--world", str(world), "--split", "test"),
        *(("--limit", str(limit)) if limit else ()),
    )
    return Stage(f"decision/{name}", command, run)


def eval_stage(name: str, cfg: EvalRunConfig) -> Stage:
    """``mmsr eval``: one method of one policy; logs the command's summary line."""
    from mmsr.eval.cli import command_line

    def run() -> Any:
        from mmsr.eval.run import run_eval, summary_line

        metrics = run_eval(cfg)
        logger.info("%s", summary_line(cfg, metrics))
        return metrics

    return Stage(f"eval/{name}", tuple(command_line(cfg)), run, cfg)
