"""``ResultLine``: one finished question of an eval run, a line of ``trajectories.jsonl``.

Its JSON keys are a contract: ``mmsr report``, ``mmsr inspect``, the demo's report and
``mmsr infoseek-score`` read the files directly. The first ten keys are
``mmsr.rollout.trajectory_record``'s (every run folder's lines share them); the rest are the
eval's scores and labels. ``eval_records`` turns lines into the ``EvalRecord``s the metrics
read. Not here: scoring a trajectory (``loop.result_line``) or reading files (``loop``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mmsr.eval.metrics import EvalRecord

# Keys a line written by an older version may lack, with the value it means (``error``
# arrived with failed questions; the others were always read leniently).
OLD_LINE_DEFAULTS: dict[str, Any] = {
    "error": None,
    "end_reason": "",
    "tool_calls": (),
    "n_trained_tokens": 0,
    "category": "",
    "need": None,
    "judge": None,
}


# What the keys the metrics and reports compute with must hold (JSON's names for the message),
# so that a damaged line is refused when read, not a TypeError deep inside a later reader.
_SHAPES: dict[str, tuple[tuple[type, ...], str]] = {
    **dict.fromkeys(("turns", "actions", "tool_calls", "images", "golds"), ((list,), "an array")),
    "reward": ((dict,), "an object"),
    **dict.fromkeys(
        ("n_tokens", "n_trained_tokens", "image_calls", "text_calls", "n_assistant_turns"),
        ((int,), "an integer"),
    ),
}
_ITEMS: dict[str, tuple[tuple[type, ...], str]] = {
    **dict.fromkeys(("turns", "actions", "tool_calls"), ((dict,), "objects")),
    "golds": ((str,), "strings"),
    "images": ((str, type(None)), "strings or null"),
}


def _shape_problem(values: Mapping[str, Any]) -> str | None:
    """The first key of a line whose value has the wrong JSON type, said in words."""
    for key, (kinds, words) in _SHAPES.items():
        value = values[key]
        if not isinstance(value, kinds) or isinstance(value, bool):
            return f"{key!r} must be {words}, got {type(value).__name__}"
        item_kinds, item_words = _ITEMS.get(key, ((object,), ""))
        if isinstance(value, list) and not all(isinstance(v, item_kinds) for v in value):
            return f"{key!r} must hold {item_words}"
    return None


@dataclass(frozen=True)
class ResultLine:
    """One question's trajectory with its scores; fields in the order of the JSON keys."""

    id: str
    """The question's id."""
    question: str
    """The question's text."""
    end_reason: str
    """Why the rollout ended (``mmsr.rollout.trajectory.EndReason`` value)."""
    turns: tuple[dict[str, Any], ...]
    """The conversation: ``{"role", "text", "n_images"}`` per turn."""
    actions: tuple[dict[str, Any], ...]
    """The parsed action of each assistant turn."""
    tool_calls: tuple[dict[str, Any], ...]
    """Every search call with its hits or error (``mmsr.rollout.trajectory.ToolCall``)."""
    images: tuple[str | None, ...]
    """Saved image file names in placeholder order (None: not saved)."""
    n_tokens: int
    """Tokens of the whole rollout."""
    n_trained_tokens: int
    """Tokens of the policy's own turns (loss_mask = 1)."""
    error: str | None
    """Why the policy could not answer (a failed question), else None."""
    method: str
    """The evaluation method."""
    answer: str | None
    """The extracted final answer (None: no answer)."""
    golds: tuple[str, ...]
    """Accepted answers."""
    category: str
    """The question's category ("" when it has none)."""
    need: str | None
    """The question's search-need label (None: unlabelled)."""
    reward: dict[str, Any]
    """The reward's breakdown (``mmsr.rewards.RewardBreakdown`` as a mapping)."""
    image_calls: int
    """Image searches made."""
    text_calls: int
    """Text searches made."""
    n_assistant_turns: int
    """Assistant turns taken."""
    judge: bool | None
    """The LLM judge's verdict (None: no judge, or it failed)."""
    judge_error: str | None
    """Why the judge gave no verdict, else None."""

    def to_json(self) -> dict[str, Any]:
        """The line's JSON object (tuples as lists), keys in field order."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str = "a result line") -> ResultLine:
        """A line read back; an older line's missing keys take ``OLD_LINE_DEFAULTS``."""
        names = [f.name for f in dataclasses.fields(cls)]
        values = {**OLD_LINE_DEFAULTS, "images": (), **data}
        missing = [n for n in names if n not in values]
        unknown = sorted(set(values) - set(names))
        if missing or unknown:
            raise ValueError(
                f"{where}: not an eval result line (missing: {', '.join(missing) or '-'}; "
                f"unknown: {', '.join(unknown) or '-'})"
            )
        problem = _shape_problem(values)
        if problem is not None:
            raise ValueError(f"{where}: the line of question {values['id']!r}: {problem}")
        seq = ("turns", "actions", "tool_calls", "images", "golds")
        kwargs: dict[str, Any] = {n: tuple(values[n]) if n in seq else values[n] for n in names}
        return cls(**kwargs)

    def searched(self) -> bool:
        """Whether the question made any search call."""
        return self.image_calls + self.text_calls > 0

    def failed_calls(self, tool: str) -> int:
        """Calls of ``tool`` ("image" or "text") that failed."""
        return sum(c.get("tool") == tool and c.get("error") is not None for c in self.tool_calls)


def _plain(value: Any) -> Any:
    return [_plain(v) for v in value] if isinstance(value, tuple) else value


def eval_records(lines: Iterable[ResultLine]) -> list[EvalRecord]:
    """``EvalRecord``s of result lines, for ``compute_metrics``."""
    return [
        EvalRecord(
            id=str(line.id),
            answer=line.answer,
            golds=line.golds,
            image_calls=int(line.image_calls),
            text_calls=int(line.text_calls),
            turns=int(line.n_assistant_turns),
            tokens=int(line.n_trained_tokens),
            category=str(line.category or ""),
            need=line.need,
            judge_correct=line.judge,
            end_reason=str(line.end_reason),
            failed_image_calls=line.failed_calls("image"),
            failed_text_calls=line.failed_calls("text"),
            failed=line.error is not None,
        )
        for line in lines
    ]
