"""What one rollout produced: the conversation, the actions, the tool calls and the tensors.

``token_ids``/``loss_mask``/``logprobs`` are filled for token-level policies: the ids exactly
as they entered and left the model, 1 in the mask only where the policy generated the token.
Thumbnails and all other injected tokens have mask 0. No torch here: plain tuples.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from mmsr.types import Action, Role, Turn


class EndReason(enum.StrEnum):
    """Why a rollout stopped (DESIGN §1)."""

    ANSWERED = "answered"
    INVALID_ACTION = "invalid_action"
    TRUNCATED = "truncated"
    SEARCH_LIMIT = "search_limit"
    SEARCH_IN_LAST_TURN = "search_in_last_turn"
    CONTEXT_FULL = "context_full"
    POLICY_ERROR = "policy_error"
    """The policy could not continue this conversation (``Trajectory.error`` says why)."""


@dataclass(frozen=True)
class ToolCall:
    """One search the rollout ran for the model."""

    turn: int
    """Index of the assistant turn that asked for it (0-based)."""
    tool: Literal["image", "text"]
    query: str | None
    n_hits: int
    error: str | None
    latency_s: float


@dataclass(frozen=True)
class Trajectory:
    """One finished rollout."""

    id: str
    question: str
    turns: tuple[Turn, ...]
    actions: tuple[Action, ...]
    tool_calls: tuple[ToolCall, ...]
    end_reason: EndReason
    token_ids: tuple[int, ...] = ()
    loss_mask: tuple[int, ...] = ()
    logprobs: tuple[float, ...] = ()
    error: str | None = None
    """Why the policy failed on this question (``end_reason`` is ``policy_error``)."""

    @property
    def assistant_texts(self) -> list[str]:
        """The assistant turns' texts, what the reward reads."""
        return [t.text for t in self.turns if t.role is Role.ASSISTANT]

    @property
    def images(self) -> tuple[Any, ...]:
        """Every image of the conversation, in placeholder order."""
        return tuple(image for turn in self.turns for image in turn.images)

    @property
    def searched(self) -> bool:
        return bool(self.tool_calls)


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _save_image(image: Any, path: Path) -> str | None:
    save = getattr(image, "save", None)
    if save is None:
        return None
    save(path, format="PNG")
    return path.name


def trajectory_record(traj: Trajectory, image_dir: Path | None = None) -> dict[str, Any]:
    """A JSON-ready dict of a trajectory; images are written to ``image_dir`` when given."""
    stem = _UNSAFE.sub("_", traj.id)[:80] or "trajectory"
    image_names: list[str | None] = []
    if image_dir is not None:
        image_dir.mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(traj.images):
            image_names.append(_save_image(image, image_dir / f"{stem}_{i}.png"))
    return {
        "id": traj.id,
        "question": traj.question,
        "end_reason": traj.end_reason.value,
        "turns": [
            {"role": t.role.value, "text": t.text, "n_images": len(t.images)} for t in traj.turns
        ],
        "actions": [asdict(a) | {"kind": a.kind.value} for a in traj.actions],
        "tool_calls": [asdict(c) for c in traj.tool_calls],
        "images": image_names,
        "n_tokens": len(traj.token_ids),
        "n_trained_tokens": sum(traj.loss_mask),
        "error": traj.error,
    }


def write_trajectories(trajectories: Iterable[Trajectory], folder: str | Path) -> Path:
    """Append trajectories to ``folder/trajectories.jsonl``, images beside them in ``images/``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "trajectories.jsonl"
    with path.open("a", encoding="utf-8") as f:
        for traj in trajectories:
            record = trajectory_record(traj, folder / "images")
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path
