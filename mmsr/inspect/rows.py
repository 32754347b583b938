"""What the inspector's lists show: a short summary ("row") of each trajectory line, the
filters over rows, their counts, the comparison of runs and the grouping of GRPO samples.

Pure functions over plain dicts. Lines come from files written by other programs (and other
versions of this one), so every field is read defensively: a missing or odd field is
``None``, never an exception; only a line that is not a JSON object (or one nested too deep
to read) is bad (``mmsr.inspect.store``).
"""

from __future__ import annotations

import math
import re
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Row = dict[str, Any]
Tools = Literal["none", "image", "text", "both"]
Disagree = Literal["correct", "searched", "answer", "all"]

MAX_LIST_CHARS = 300
"""Longest question or answer in a list row (the trajectory view shows them whole)."""
_COPY = re.compile(r"#\d+$")


def as_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def as_number(value: Any) -> float | None:
    """A finite JSON number (not a bool), else ``None``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer of hundreds of digits
        return None
    return number if math.isfinite(number) else None


def as_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def as_strings(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def as_dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def correctness(record: Mapping[str, Any]) -> bool | None:
    """The judge's verdict where there is one, else the reward's accuracy > 0; ``None``
    for a line without either (e.g. an unscored rollout)."""
    judge = record.get("judge")
    if isinstance(judge, bool):
        return judge
    reward = record.get("reward")
    accuracy = as_number(reward.get("accuracy")) if isinstance(reward, dict) else None
    return None if accuracy is None else accuracy > 0


def tools_used(calls: Sequence[Mapping[str, Any]]) -> Tools:
    used = {as_str(c.get("tool")) for c in calls}  # a list there is not hashable
    if {"image", "text"} <= used:
        return "both"
    return "image" if "image" in used else "text" if "text" in used else "none"


def summarize(record: Mapping[str, Any], line: int) -> Row:
    """The row of the JSON object on line ``line`` (1-based) of its file."""
    calls = as_dicts(record.get("tool_calls"))
    raw_reward = record.get("reward")
    reward: dict[str, Any] = raw_reward if isinstance(raw_reward, dict) else {}
    id_ = record.get("id")
    return {
        "line": line,
        "id": str(id_) if isinstance(id_, str | int) and str(id_) else f"line {line}",
        "question": as_str(record.get("question")) or "",
        # eval lines say it at the top, rollouts and GRPO samples in the reward
        "answer": as_str(record.get("answer", reward.get("answer"))),
        "golds": as_strings(record.get("golds")),
        "correct": correctness(record),
        "searched": bool(calls),
        "tools": tools_used(calls),
        "failed_calls": sum(c.get("error") is not None for c in calls),
        "category": as_str(record.get("category")) or "",
        "need": as_str(record.get("need")) or "",
        "end_reason": as_str(record.get("end_reason")) or "",
        "reward": as_number(reward.get("score")),
        "error": as_str(record.get("error")),
        "method": as_str(record.get("method")),
        "group": as_int(record.get("group")),
        "advantage": as_number(record.get("advantage")),
        "turns": sum(t.get("role") == "assistant" for t in as_dicts(record.get("turns"))),
        "step": as_int(record.get("step")),
        "bad": None,
    }


_ROW_KEYS = tuple(summarize({}, 0))


def bad_row(line: int, problem: str, text: str) -> Row:
    """The row of a line that is not a JSON object: ``bad`` says why, ``question`` holds the
    start of the line's text (the list shows it as such)."""
    row: Row = {key: None for key in _ROW_KEYS}
    row.update(line=line, id=f"line {line}", question=text[:MAX_LIST_CHARS], golds=[])
    row.update(searched=False, tools="none", failed_calls=0, turns=0, bad=problem)
    row.update(category="", need="", end_reason="")
    return row


def list_row(row: Row) -> Row:
    """``row`` as the list sends it: long question and answer cut."""
    out = dict(row)
    for key in ("question", "answer"):
        if isinstance(out[key], str) and len(out[key]) > MAX_LIST_CHARS:
            out[key] = out[key][: MAX_LIST_CHARS - 1] + "…"
    return out


@dataclass(frozen=True)
class Filters:
    """What the list is narrowed to; ``None`` / empty: no condition."""

    correct: bool | None = None
    searched: bool | None = None
    tools: Tools | None = None
    category: str | None = None
    """"" matches rows without a category."""
    need: str | None = None
    """A search-need label ("none" is a label: needs no search); "" matches unlabelled rows."""
    end_reason: str | None = None
    reward_min: float | None = None
    reward_max: float | None = None
    text: str = ""
    """Case-insensitive substring of the question, the id or the answer."""
    bad: bool = False
    """Only the lines that are not JSON objects."""

    @property
    def active(self) -> bool:
        return self != Filters()

    def match(self, row: Row) -> bool:
        if self.bad and row["bad"] is None:
            return False
        checks = (
            (self.correct, row["correct"]),
            (self.searched, row["searched"]),
            (self.tools, row["tools"]),
            (self.category, row["category"]),
            (self.need, row["need"]),
            (self.end_reason, row["end_reason"]),
        )
        if any(want is not None and got != want for want, got in checks):
            return False
        score = row["reward"]
        if self.reward_min is not None and (score is None or score < self.reward_min):
            return False
        if self.reward_max is not None and (score is None or score > self.reward_max):
            return False
        if self.text:
            needle = self.text.casefold()
            haystack = (row["question"], row["id"], row["answer"] or "")
            return any(needle in h.casefold() for h in haystack)
        return True


def counts(rows: Iterable[Row]) -> dict[str, Any]:
    """Totals of rows: how many, correct / wrong / unscored, searched, tools, failed, reward."""
    rows = list(rows)
    rewards = [r["reward"] for r in rows if r["reward"] is not None]
    tools = Counter(r["tools"] for r in rows)
    return {
        "n": len(rows),
        "correct": sum(r["correct"] is True for r in rows),
        "wrong": sum(r["correct"] is False for r in rows),
        "unscored": sum(r["correct"] is None for r in rows),
        "searched": sum(r["searched"] for r in rows),
        "tools": {t: tools.get(t, 0) for t in ("none", "image", "text", "both")},
        "failed": sum(r["error"] is not None for r in rows),
        "failed_calls": sum(r["failed_calls"] for r in rows),
        "bad": sum(r["bad"] is not None for r in rows),
        "mean_reward": sum(rewards) / len(rewards) if rewards else None,
    }


def facets(rows: Iterable[Row]) -> dict[str, dict[str, int]]:
    """The values of the categorical fields and how many rows have each (for the filters)."""
    out: dict[str, Counter[str]] = {
        "category": Counter(),
        "need": Counter(),
        "end_reason": Counter(),
    }
    for row in rows:
        for key, counter in out.items():
            counter[row[key]] += 1
    return {key: dict(sorted(counter.items())) for key, counter in out.items()}


# --- several runs on the same questions ---


def _first_by_id(rows: Iterable[Row]) -> dict[str, Row]:
    first: dict[str, Row] = {}
    for row in rows:
        if row["bad"] is None:
            first.setdefault(row["id"], row)
    return first


def _normalized(answer: str | None) -> str:
    return " ".join((answer or "").casefold().split())


DISAGREE_ON: dict[str, Any] = {
    "correct": lambda cells: len({c["correct"] for c in cells}) > 1,
    "searched": lambda cells: len({c["searched"] for c in cells}) > 1,
    "answer": lambda cells: len({_normalized(c["answer"]) for c in cells}) > 1,
    "all": lambda cells: True,
}


def compare(runs: Sequence[Iterable[Row]], disagree: Disagree) -> dict[str, Any]:
    """The questions every run answered (by id, in the first run's order; a run's first line
    of an id counts, bad lines do not), those where they ``disagree``, and how often each pattern of
    correctness (one ✓/✗/? per run) occurs."""
    by_run = [_first_by_id(rows) for rows in runs]
    common = [i for i in by_run[0] if all(i in run for run in by_run[1:])]
    patterns: Counter[str] = Counter()
    items = []
    for id_ in common:
        cells = [run[id_] for run in by_run]
        patterns["".join({True: "✓", False: "✗"}.get(c["correct"], "?") for c in cells)] += 1
        if DISAGREE_ON[disagree](cells):
            items.append({"id": id_, "question": cells[0]["question"], "cells": cells})
    return {
        "n_common": len(common),
        "only_in": [len(run) - len(common) for run in by_run],
        "patterns": dict(patterns.most_common()),
        "items": items,
    }


# --- GRPO samples grouped by prompt ---


def group_key(row: Row) -> str:
    """The prompt a sample belongs to: its ``group`` (GRPO dumps), else its id without the
    ``#k`` copy suffix of ``mmsr rollout --n``."""
    if row["group"] is not None:
        return f"group {row['group']}"
    return _COPY.sub("", row["id"])


def groups(rows: Iterable[Row]) -> list[dict[str, Any]]:
    """Samples (bad lines aside) grouped by prompt, in order of first appearance, with each
    group's reward mean and spread (a group whose rewards are all equal has zero advantage:
    no signal)."""
    grouped: dict[str, list[Row]] = {}
    for row in rows:
        if row["bad"] is None:
            grouped.setdefault(group_key(row), []).append(row)
    out = []
    for key, members in grouped.items():
        rewards = [m["reward"] for m in members if m["reward"] is not None]
        out.append(
            {
                "key": key,
                "id": members[0]["id"],
                "question": members[0]["question"],
                "golds": members[0]["golds"],
                "n": len(members),
                "correct": sum(m["correct"] is True for m in members),
                "searched": sum(m["searched"] for m in members),
                "mean_reward": statistics.fmean(rewards) if rewards else None,
                "std_reward": statistics.pstdev(rewards) if rewards else None,
                "samples": [list_row(m) for m in members],
            }
        )
    return out
