"""What one rollout produced: the conversation, the actions, the tool calls and the tensors.

``token_ids``/``loss_mask``/``logprobs`` are filled for token-level policies: the ids exactly
as they entered and left the model, 1 in the mask only where the policy generated the token.
Thumbnails and all other injected tokens have mask 0. No torch here: plain tuples.

``trajectory_record`` is the JSON line every run folder holds (eval, ``mmsr rollout``, GRPO
samples) and ``mmsr inspect`` reads; images go beside it in ``images/``, named by content so
that a thumbnail shown to a thousand rollouts is stored once.
"""

from __future__ import annotations

import enum
import hashlib
import io
import json
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from mmsr.types import Action, Role, Turn


class EndReason(enum.StrEnum):
    """Why a rollout stopped."""

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
    hits: tuple[Mapping[str, Any], ...] = ()
    """What came back, as ``hit_record``s (title, url, summary, thumbnail?), in hit order."""


# Bounds a record's size: a page summary is ≤ 5 sentences by design, but a backend may send more.
MAX_HIT_CHARS = 2000


def hit_record(hit: Any) -> dict[str, Any]:
    """A search hit as plain JSON: title, url, summary (text hits) and whether it had a
    thumbnail (image hits; the pixels are in the observation turn's images)."""

    def text(name: str) -> str:
        value = getattr(hit, name, None)
        return "" if value is None else str(value)[:MAX_HIT_CHARS]

    record: dict[str, Any] = {"title": text("title"), "url": text("url")}
    if hasattr(hit, "summary"):
        record["summary"] = text("summary")
    if hasattr(hit, "thumbnail"):
        record["thumbnail"] = hit.thumbnail is not None
    return record


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


# Images up to this size (pixels on the longer side) are stored as PNG, larger ones (dataset
# photos) as JPEG: a PNG of a photo is ~10x larger and the inspector only needs to show it.
PNG_MAX_SIDE = 512


def save_image(image: Any, image_dir: Path) -> str | None:
    """Stores a PIL image in ``image_dir`` under a name made from its content; the name, or
    ``None`` for something that is not an image. Written once, atomically (tmp + rename)."""
    if getattr(image, "save", None) is None or getattr(image, "size", None) is None:
        return None
    buffer = io.BytesIO()
    if max(image.size) <= PNG_MAX_SIDE:
        image.save(buffer, format="PNG")
        suffix = ".png"
    else:
        image.convert("RGB").save(buffer, format="JPEG", quality=90)
        suffix = ".jpg"
    data = buffer.getvalue()
    name = hashlib.sha256(data).hexdigest()[:24] + suffix
    path = image_dir / name
    if not path.exists():
        tmp = image_dir / f".{name}.{os.getpid()}.{threading.get_ident()}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return name


def trajectory_record(traj: Trajectory, image_dir: Path | None = None) -> dict[str, Any]:
    """A JSON-ready dict of a trajectory. With ``image_dir``, every image of the conversation
    is stored there and ``images`` names them in placeholder order (``None``: not an image);
    each turn's ``n_images`` says which are its own."""
    image_names: list[str | None] = []
    if image_dir is not None:
        image_dir.mkdir(parents=True, exist_ok=True)
        image_names = [save_image(image, image_dir) for image in traj.images]
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


def write_trajectories(
    trajectories: Iterable[Trajectory],
    folder: str | Path,
    extras: Sequence[Mapping[str, Any]] | None = None,
) -> Path:
    """Append trajectories to ``folder/trajectories.jsonl``, images beside them in ``images/``;
    ``extras[i]`` (e.g. a GRPO sample's reward, advantage and group) is merged into line i."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "trajectories.jsonl"
    trajectories = list(trajectories)
    if extras is not None and len(extras) != len(trajectories):
        raise ValueError(f"{len(extras)} extras for {len(trajectories)} trajectories")
    with path.open("a", encoding="utf-8") as f:
        for i, traj in enumerate(trajectories):
            record = trajectory_record(traj, folder / "images")
            record.update(extras[i] if extras is not None else {})
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path
