"""A finished warm start, measured the way the evaluation will use it — on train questions.

``write_validation`` writes the recipe's validation questions (train questions held out of the
teacher, never the test split) to ``WORK/checks/validation.parquet``; ``evaluate_methods`` runs
``mmsr eval``'s own ``run_eval`` over them with each method the recipe names (``direct``,
``rag``, ``on-demand`` …), each into ``WORK/checks/<method>/`` (resumed when cut). Per method
it keeps the metrics ``run_eval`` wrote and a ``read`` figure: of the questions asking for a
fact whose value the text hits showed, the share answered right — the reader's part of the
search path.
``probe_decision`` reads the decision probe over the same questions (``decision.auc``: does the
model's P(search) tell tail pictures from head ones?) into ``WORK/checks/decision-probe.json``.

A check names a value by a dotted path: ``rag.by_category.search_free.accuracy_em``,
``rag.read.right``; ``"A - B"`` compares two (``rag.… - direct.…``: how far searching moves an
answer the model knows). ``check`` holds each value to its bounds: a bare number is a minimum,
``{ max = 0.1 }`` a maximum, ``{ min = 0.2, max = 0.9 }`` both. Not here: the stages
(``mmsr.warmstart.recipe``).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mmsr.run_folder import read_finished, write_json

logger = logging.getLogger(__name__)

CHECKS_DIR = "checks"
VALIDATION_FILE = "validation.parquet"
PROBE_FILE = "decision-probe.json"
BOUNDS = ("min", "max")
"""What a check bounds its value by (a bare number is a minimum)."""


def write_validation(world: Path, n: int, out: Path) -> Path:
    """The world's ``n`` validation questions (``WorldKit``'s hold-out) as a parquet file of the
    train split's own rows."""
    from mmsr.data import load_samples
    from mmsr.data.export import write_rows_of
    from mmsr.teacher.world_kit import split_validation, world_config

    train = world / "train.parquet"
    _, held = split_validation(load_samples(train), n, world_config(world).seed)
    return write_rows_of(train, held, out)


_INFORMATION = re.compile(r"<information>(.*?)</information>", re.DOTALL)


def _results(turns: Sequence[dict[str, Any]]) -> str:
    """The search results a trajectory showed: every user turn after the first, and the
    results sections of the first (the searches a method made for the model)."""
    parts = []
    for i, turn in enumerate(turns):
        if turn.get("role") != "user":
            continue
        text = str(turn.get("text", ""))
        parts.append(" ".join(_INFORMATION.findall(text)) if i == 0 else text)
    return " ".join(parts)


def read_rate(lines: Iterable[dict[str, Any]]) -> dict[str, float]:
    """Of the fact questions (need ``text`` or ``both``) whose gold value was in the search
    results shown (a results turn, or a first turn's prefetched results), how many were
    answered right."""
    from mmsr.rewards import normalize_answer

    n = right = 0
    for line in lines:
        if line.get("need") not in ("text", "both"):
            continue
        golds = [normalize_answer(str(g)) for g in line.get("golds", [])]
        shown = normalize_answer(_results(line.get("turns", [])))
        if not any(g and g in shown for g in golds):
            continue
        n += 1
        right += float((line.get("reward") or {}).get("accuracy", 0.0)) > 0
    return {"n": float(n), "right": right / n if n else 0.0}


def evaluate_methods(
    model: Path,
    data: Path,
    index: Path,
    folder: Path,
    methods: Sequence[str],
    *,
    progress: bool = False,
) -> dict[str, Any]:
    """Each method's metrics (and ``read``) over the validation questions in ``data``, by
    method name; each method's run goes into ``folder/<method>/``."""
    from mmsr.eval.config import EvalRunConfig
    from mmsr.eval.run import run_eval

    out: dict[str, Any] = {}
    for method in methods:
        run = folder / method
        cfg = EvalRunConfig(
            policy=f"hf:{model}",
            method=method,
            data=data,
            out=run,
            search=f"local:{index}",
            benchmark="validation",
            progress=progress,
        )
        logger.info("checking %s with %s on the validation questions", model, method)
        metrics = run_eval(cfg)
        lines = read_finished(run / "trajectories.jsonl")
        out[method] = {**metrics, "read": read_rate(lines)}
    return out


def probe_decision(model: Path, world: Path, data: Path, folder: Path) -> dict[str, Any]:
    """``decision_figures`` of ``model`` over the validation questions in ``data`` (questions
    of the world built in ``world``; the classes only sort the figures, no label reaches the
    model), also written to ``folder/decision-probe.json``."""
    from mmsr.data import load_samples
    from mmsr.train.decision_probe import decision_figures, open_probe

    logger.info("decision probe of %s on the validation questions", model)
    figures = decision_figures(open_probe(model, world)(load_samples(data)))
    write_json(folder / PROBE_FILE, figures)
    return figures


def lookup(values: dict[str, Any], name: str) -> Any:
    """The value at a dotted path, or ``A - B`` of two; None where a part is missing."""
    if " - " in name:
        left, right = (lookup(values, part.strip()) for part in name.split(" - ", 1))
        ok = all(isinstance(v, int | float) for v in (left, right))
        return left - right if ok else None
    value: Any = values
    for part in name.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def check_bounds(value: Any) -> dict[str, float]:
    """A check's bounds: a bare number is a minimum, ``{ min = 0.2, max = 0.9 }`` either or
    both.

    >>> check_bounds(0.85), check_bounds({"max": 0.1})
    ({'min': 0.85}, {'max': 0.1})
    """
    if _is_number(value):
        return {"min": float(value)}
    if not isinstance(value, Mapping) or not value:
        raise ValueError(f"a number or a table of {' and/or '.join(BOUNDS)}, not {value!r}")
    unknown = sorted(set(value) - set(BOUNDS))
    if unknown:
        raise ValueError(f"unknown bound(s) {', '.join(map(str, unknown))} ({', '.join(BOUNDS)})")
    if not all(_is_number(v) for v in value.values()):
        raise ValueError(f"bounds are numbers, not {dict(value)!r}")
    bounds = {k: float(value[k]) for k in BOUNDS if k in value}
    if bounds.get("min", -math.inf) > bounds.get("max", math.inf):
        raise ValueError(f"min {bounds['min']} is above max {bounds['max']}")
    return bounds


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check(
    checks: Mapping[str, float | Mapping[str, float]], values: dict[str, Any]
) -> dict[str, Any]:
    """Each check's value in ``values`` (a dotted path, or ``A - B``) against its bounds
    (``check_bounds``: a bare number is a minimum); a row per check: its bounds, the value and
    whether the value is within them (a missing value never is)."""
    out = {}
    for name, given in checks.items():
        bounds = check_bounds(given)
        value = lookup(values, name)
        ok = isinstance(value, int | float) and (
            bounds.get("min", -math.inf) <= value <= bounds.get("max", math.inf)
        )
        out[name] = {**bounds, "value": value, "ok": ok}
    return out
