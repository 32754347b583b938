"""A warm start as one command: a recipe file names every stage of the chain — SFT runs and
vision pretraining — with step budgets, and ``run_recipe`` runs them in order, each from the
one before.

A recipe is a TOML file (the packaged ones live in ``mmsr/warmstart/recipes/``; ``--recipe NAME``
finds them by name)::

    validation_questions = 200      # train questions held out of the teacher: the checks' data

    [[stages]]
    name = "primer"
    trainer = "sft"                 # or "vision"
    [stages.config]                 # fields of SFTConfig (or VisionConfig), nested as in YAML
    max_steps = 600
    lr = 5e-4

    evaluate = ["direct", "rag"]    # evaluation methods run on the validation questions
    decision_probe = true           # and the decision probe: P(search) per question, its AUC

    [world]                         # the world and index it needs (checked before any stage)
    fact_layout = "lines"           # mmsr world build --fact-layout lines
    summary_order = "relevance"     # mmsr index build --summary-order relevance

    [checks]                        # bounds on the last stage's final validation record
    "search_free.accuracy" = 0.85   # ... or on an evaluated method's metrics, or a difference
    "rag.by_category.search_free.accuracy_em - direct.by_category.search_free.accuracy_em" = -0.03
    "on-demand.overall.search_ratio" = { min = 0.2, max = 0.9 }   # a bare number: a minimum
    "decision.auc" = 0.9            # the probe's figures (mmsr.train.decision_probe)

Every stage runs in ``WORK/NN-name/`` and is marked done there (``stage.json``: its table, final
record and seconds) only once it finished, so a rerun of the same command skips the stages
done and restarts the one that was cut; a stage whose table changed since it ran runs again,
and so does every stage after it. Budgets are steps, never minutes, so a recipe gives
the same chain on any machine. SFT stages evaluate on ``validation_questions`` train questions
held out of the teacher's pool (never the test split). At the end the last stage's model is
copied to ``OUT`` with the recipe, ``recipe_report.json`` (per-stage seconds and records, the
checks) and ``world.json`` (the world settings it was trained on, which ``mmsr demo`` builds
its world with) beside it. Not here: the trainers (``sft.py``, ``vision.py``).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mmsr.config import read_json
from mmsr.run_folder import replace_folder, write_json
from mmsr.warmstart.checks import check, check_bounds

logger = logging.getLogger(__name__)

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"
TRAINERS = ("sft", "vision")
STAGE_FILE = "stage.json"
CHECKPOINT_EVERY = 100
"""Steps between a stage's resume states: a cut stage loses at most this many steps."""
REPORT_FILE = "recipe_report.json"
MEASURED_FILE = "measured.json"
"""In ``STAGES/checks/``: the stage marker of the model the checks there measured."""


class RecipeError(ValueError):
    """A recipe file is malformed; the message names the file and the field."""


@dataclass(frozen=True)
class Stage:
    """One run of the chain."""

    name: str
    trainer: str
    config: dict[str, Any]


@dataclass(frozen=True)
class Recipe:
    """A parsed recipe file."""

    path: Path
    stages: tuple[Stage, ...]
    validation_questions: int = 200
    checks: dict[str, dict[str, float]] = field(default_factory=dict)
    """Each check's bounds by its value's name: ``min`` and/or ``max`` (``check_bounds``)."""
    evaluate: tuple[str, ...] = ()
    """Evaluation methods run on the validation questions after the last stage (the checks
    can read their metrics: ``rag.by_category.search_free.accuracy_em``)."""
    world: dict[str, str] = field(default_factory=dict)
    """World settings the world and index must have (``fact_layout``, ``summary_order``)."""
    decision_probe: bool = False
    """Whether the decision probe reads the last model's P(search) on the validation questions
    (``decision_figures``: the checks read ``decision.auc``, ``decision.auc_by_kind.flag`` …)."""


def find_recipe(name_or_path: str | Path) -> Path:
    """A recipe file: a path, or the name of a packaged recipe (``warmstart-tiny``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    packaged = RECIPES_DIR / f"{name_or_path}.toml"
    if packaged.is_file():
        return packaged
    names = ", ".join(sorted(p.stem for p in RECIPES_DIR.glob("*.toml")))
    raise RecipeError(f"{name_or_path}: no such recipe file or packaged recipe ({names})")


def load_recipe(name_or_path: str | Path) -> Recipe:
    """Parse and check a recipe; every stage's config is built once here, so a typo in the
    last stage fails before the first one runs."""
    path = find_recipe(name_or_path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise RecipeError(f"{path}: not a readable TOML file ({err})") from err
    known = {
        "validation_questions",
        "stages",
        "checks",
        "description",
        "evaluate",
        "world",
        "decision_probe",
    }
    unknown = sorted(set(data) - known)
    if unknown:
        raise RecipeError(f"{path}: unknown key(s) {', '.join(unknown)}")
    raw = data.get("stages")
    if not isinstance(raw, list) or not raw:
        raise RecipeError(f"{path}: needs at least one [[stages]] table")
    stages, seen = [], set()
    for number, item in enumerate(raw, start=1):
        stage = _stage(item, f"{path}: stage {number}")
        if stage.name in seen:
            raise RecipeError(f"{path}: stage {number}: duplicate name {stage.name!r}")
        seen.add(stage.name)
        stages.append(stage)
    if stages[0].trainer != "sft":
        raise RecipeError(f"{path}: the first stage must be 'sft' (it makes the model)")
    validation = data.get("validation_questions", 200)
    if not isinstance(validation, int) or validation < 1:
        raise RecipeError(f"{path}: validation_questions must be a positive integer")
    checks = _checks(data.get("checks", {}), path)
    evaluate = _methods(data.get("evaluate", []), path)
    probe = data.get("decision_probe", False)
    if not isinstance(probe, bool):
        raise RecipeError(f"{path}: decision_probe is true or false")
    from mmsr.teacher.world_kit import check_world_settings

    world = data.get("world", {})
    if not isinstance(world, dict):
        raise RecipeError(f"{path}: [world] maps world settings to values")
    try:
        check_world_settings(world, f"{path}: [world]")
    except ValueError as err:
        raise RecipeError(str(err)) from err
    recipe = Recipe(path, tuple(stages), validation, checks, evaluate, world, probe)
    for stage in recipe.stages:
        stage_config(recipe, stage, init="")  # every config builds (ConfigError names the key)
    return recipe


def _checks(value: Any, path: Path) -> dict[str, dict[str, float]]:
    what = "[checks] maps metric names to numbers (minimums) or tables of min and/or max"
    if not isinstance(value, dict):
        raise RecipeError(f"{path}: {what}")
    out = {}
    for name, given in value.items():
        try:
            out[name] = check_bounds(given)
        except ValueError as err:
            raise RecipeError(f"{path}: {what}; {name!r}: {err}") from None
    return out


def _methods(value: Any, path: Path) -> tuple[str, ...]:
    from mmsr.eval.methods import METHODS

    if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
        raise RecipeError(f"{path}: evaluate is a list of method names")
    unknown = [m for m in value if m not in METHODS]
    if unknown:
        raise RecipeError(
            f"{path}: evaluate: unknown method(s) {', '.join(unknown)}; known: {', '.join(METHODS)}"
        )
    return tuple(value)


def _stage(item: Any, where: str) -> Stage:
    if not isinstance(item, dict):
        raise RecipeError(f"{where}: must be a table")
    unknown = sorted(set(item) - {"name", "trainer", "config"})
    if unknown:
        raise RecipeError(f"{where}: unknown key(s) {', '.join(unknown)}")
    name, trainer, config = item.get("name"), item.get("trainer"), item.get("config", {})
    if not isinstance(name, str) or not name.replace("-", "").replace("_", "").isalnum():
        raise RecipeError(f"{where}: 'name' must be letters, digits, '-' or '_'")
    if trainer not in TRAINERS:
        raise RecipeError(f"{where}: 'trainer' must be one of {', '.join(TRAINERS)}")
    if not isinstance(config, dict):
        raise RecipeError(f"{where}: 'config' must be a table")
    for key in ("minutes", "init_from", "validation_questions", "checkpoint_every"):
        if key in config:
            raise RecipeError(f"{where}: config.{key} is set by the recipe runner, not a stage")
    budget = config.get("max_steps")
    if not isinstance(budget, int) or budget < 1:
        raise RecipeError(f"{where}: config.max_steps must be a positive step budget")
    return Stage(name, trainer, config)


def stage_config(recipe: Recipe, stage: Stage, init: str) -> Any:
    """The stage's trainer config: its table over the trainer's defaults, a steps budget only,
    and (SFT) the recipe's validation hold-out and ``init``."""
    from mmsr.config import build, merge

    if stage.trainer == "vision":
        from mmsr.train.vision import VisionConfig

        vision: dict[str, Any] = {"minutes": 0.0, "checkpoint_every": CHECKPOINT_EVERY}
        return build(VisionConfig, merge(stage.config, vision))
    from mmsr.train.sft import load_sft_config

    fixed: dict[str, Any] = {
        "minutes": 0.0,
        "eval_every_minutes": 0.0,
        "checkpoint_every": CHECKPOINT_EVERY,
        "init_from": init,
        "validation_questions": recipe.validation_questions,
    }
    config = load_sft_config(None, merge(stage.config, fixed))
    listed = stage.config.get("teacher", {}).get("weights", {})
    kept = {k: v for k, v in asdict(config.teacher.weights).items() if k not in listed and v}
    if listed and kept:  # a weights table is merged over the defaults, not in place of them
        logger.info(
            "stage %s: teacher kinds not in its weights table keep their defaults: %s",
            stage.name,
            ", ".join(f"{k}={v:g}" for k, v in kept.items()),
        )
    return config


def run_recipe(
    recipe: Recipe,
    world: str | Path,
    index: str | Path,
    out: str | Path,
    *,
    work: str | Path | None = None,
    until: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Run the recipe's stages not yet done (all, or up to ``until``), then copy the last
    stage's model to ``out``; returns the report (also ``out/recipe_report.json``)."""
    out = Path(out)
    work = Path(work) if work is not None else out.with_name(out.name + ".stages")
    if until is not None and until not in {s.name for s in recipe.stages}:
        raise RecipeError(f"--until {until!r}: the recipe has no such stage")
    from mmsr.teacher.world_kit import world_settings

    have = world_settings(world, index)
    wrong = {k: v for k, v in recipe.world.items() if have[k] != v}
    if wrong:
        needs = ", ".join(f"{k} = {v!r} (it has {have[k]!r})" for k, v in wrong.items())
        raise RecipeError(
            f"{recipe.path}: the world and index must have {needs}; build them with "
            "'mmsr world build --fact-layout …' and 'mmsr index build --summary-order …'"
        )
    work.mkdir(parents=True, exist_ok=True)
    init, rows, stale = "", [], False
    for number, stage in enumerate(recipe.stages, start=1):
        folder = work / f"{number:02d}-{stage.name}"
        stale = stale or _changed(stage, folder) or not (folder / STAGE_FILE).is_file()
        if stale:  # a stage not done or whose table changed, and every stage after it, runs
            (folder / STAGE_FILE).unlink(missing_ok=True)
        rows.append(_run_stage(recipe, stage, folder, init, world, index, progress))
        init = str(folder)
        if stage.name == until:
            logger.info("stopped after stage %s (--until)", stage.name)
            return {"stages": rows, "finished": False}
    values: dict[str, Any] = dict(rows[-1]["final"])
    if recipe.evaluate or recipe.decision_probe:
        from mmsr.warmstart.checks import (
            CHECKS_DIR,
            VALIDATION_FILE,
            evaluate_methods,
            probe_decision,
            write_validation,
        )

        folder = work / CHECKS_DIR
        measured = rows[-1] | {"folder": Path(init).name}
        if stale or not _same_json(_read_json(folder / MEASURED_FILE), measured):
            # a new model (a stage ran again, or the recipe's last stage is another one):
            # measured afresh, never resumed from the old one's answers
            shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / MEASURED_FILE, measured)
        data = write_validation(Path(world), recipe.validation_questions, folder / VALIDATION_FILE)
        model = Path(init)
        values.update(
            evaluate_methods(model, data, Path(index), folder, recipe.evaluate, progress=progress)
        )
        if recipe.decision_probe:
            values["decision"] = probe_decision(model, Path(world), data, folder)
    report = {
        "recipe": recipe_label(recipe.path),
        "stages": rows,
        "minutes": round(sum(r["seconds"] for r in rows) / 60.0, 1),
        "evaluation": {m: values[m] for m in recipe.evaluate},
        **({"decision": values["decision"]} if recipe.decision_probe else {}),
        "checks": check(recipe.checks, values),
        "finished": True,
    }
    _publish(Path(init), out, recipe, report, have)
    return report


def recipe_label(path: Path) -> str:
    """How a report names its recipe: a packaged one by its name (no machine's path in a
    published model), any other by its path."""
    if path.parent == RECIPES_DIR and path.suffix == ".toml":
        return path.stem
    return str(path)


def _changed(stage: Stage, folder: Path) -> bool:
    """Whether ``folder`` holds a finished run of a different table than ``stage``'s (a marker
    written before markers kept their table counts as the same)."""
    marker = folder / STAGE_FILE
    if not marker.is_file():
        return False
    try:
        done = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return True  # an unreadable marker: the stage runs again
    if not isinstance(done, dict) or ("config" in done and done["config"] != stage.config):
        logger.info("stage %s: its recipe table changed since it ran; it runs again", stage.name)
        return True
    return False


def _run_stage(
    recipe: Recipe,
    stage: Stage,
    folder: Path,
    init: str,
    world: str | Path,
    index: str | Path,
    progress: bool,
) -> dict[str, Any]:
    marker = folder / STAGE_FILE
    if marker.is_file():
        row: dict[str, Any] = json.loads(marker.read_text(encoding="utf-8"))
        logger.info("stage %s: done before (%.1f min), skipped", stage.name, row["seconds"] / 60)
        return row
    _clear_keeping_resume(folder)  # a cut stage runs again, from its last resume state if any
    config = stage_config(recipe, stage, init)
    logger.info(
        "stage %s (%s, %d steps) from %s",
        stage.name,
        stage.trainer,
        config.max_steps,
        init or "a fresh model",
    )
    start = time.perf_counter()
    if stage.trainer == "vision":
        from mmsr.train.vision import train_vision

        metrics = train_vision(
            Path(world), Path(index), Path(init), folder, config, progress=progress
        )
        final = metrics["final"]
    else:
        from mmsr.train.sft import train_sft

        final = train_sft(config, world, index, folder, eval_split="validation", progress=progress)
    row = {
        "name": stage.name,
        "trainer": stage.trainer,
        "steps": config.max_steps,
        "config": stage.config,
        "seconds": round(time.perf_counter() - start, 1),
        "final": final,
    }
    write_json(marker, row)
    return row


def _same_json(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _read_json(path: Path) -> Any:
    """The file's JSON value; ``None`` when it is missing or unreadable."""
    try:
        return read_json(path)
    except (OSError, ValueError):
        return None


def _clear_keeping_resume(folder: Path) -> None:
    """Empty ``folder`` of a cut run's files, but for its resume state."""
    from mmsr.train.resume import RESUME_DIR

    if not folder.is_dir():
        return
    for path in folder.iterdir():
        if path.name == RESUME_DIR:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def _publish(
    last: Path, out: Path, recipe: Recipe, report: dict[str, Any], world: dict[str, str]
) -> None:
    """The last stage's files, the recipe, the report and the world settings, into ``out``
    (replaced whole)."""
    from mmsr.teacher.world_kit import WORLD_FILE

    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(last, tmp, ignore=shutil.ignore_patterns(STAGE_FILE))
    shutil.copy(recipe.path, tmp / "recipe.toml")
    (tmp / REPORT_FILE).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    (tmp / WORLD_FILE).write_text(json.dumps(world, indent=1) + "\n", encoding="utf-8")
    replace_folder(tmp, out)
