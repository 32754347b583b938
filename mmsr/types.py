"""Shared records passed between the protocol, rewards, search, rollout and evaluation.

Plain frozen dataclasses with no behaviour beyond small conveniences; nothing here imports
torch or PIL. Images are carried as opaque objects (PIL images in practice) so that the
records stay importable everywhere.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias


class ActionKind(enum.StrEnum):
    """What an assistant turn asks for."""

    ANSWER = "answer"
    IMAGE_SEARCH = "image_search"
    TEXT_SEARCH = "text_search"
    INVALID = "invalid"


@dataclass(frozen=True)
class Answer:
    """The turn ends the rollout with an answer (the text inside ``<answer>``, stripped)."""

    text: str
    kind: ActionKind = field(default=ActionKind.ANSWER, init=False)


@dataclass(frozen=True)
class ImageSearch:
    """The turn asks for a reverse image search on the question's image."""

    kind: ActionKind = field(default=ActionKind.IMAGE_SEARCH, init=False)


@dataclass(frozen=True)
class TextSearch:
    """The turn asks for a web search for ``query`` (stripped, never empty)."""

    query: str
    kind: ActionKind = field(default=ActionKind.TEXT_SEARCH, init=False)


@dataclass(frozen=True)
class Invalid:
    """The turn asks for nothing usable; ``reason`` says why, for logs and metrics."""

    reason: str
    kind: ActionKind = field(default=ActionKind.INVALID, init=False)


Action: TypeAlias = Answer | ImageSearch | TextSearch | Invalid


class Role(enum.StrEnum):
    """Who speaks a turn."""

    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"


@dataclass(frozen=True)
class Turn:
    """One message of a conversation.

    ``text`` holds one image placeholder (``mmsr.protocol.IMAGE_PLACEHOLDER``) per entry of
    ``images``, in the same order.
    """

    role: Role
    text: str
    images: tuple[Any, ...] = ()


@dataclass(frozen=True)
class ImageHit:
    """One result of a reverse image search: a page title, its url and a thumbnail image."""

    title: str
    url: str
    thumbnail: Any = None


@dataclass(frozen=True)
class TextHit:
    """One result of a text search: a page title, its url and a summary of the page."""

    title: str
    url: str
    summary: str


@dataclass(frozen=True)
class RewardBreakdown:
    """The reward of one trajectory and the terms it is made of.

    ``score = (1 - format_weight) * accuracy * penalty + format_weight * format_score``, where
    ``penalty`` is the search penalty's factor (1.0 when nothing was searched or the answer is
    wrong). ``answer`` is the text of the last ``<answer>`` of the last assistant turn, or ``None``.
    ``error`` is set when the accuracy could not be measured (e.g. the judge failed); the
    accuracy is then 0, never silently 1.
    """

    score: float
    accuracy: float
    format_score: float
    search_count: int
    answer: str | None
    error: str | None = None
    penalty: float = 1.0


@dataclass(frozen=True)
class Sample:
    """One question about one image, with its gold answers.

    ``image`` holds the encoded image file (JPEG/PNG bytes) or ``None``; ``image_path`` says
    where it came from, or where to find it when the bytes were not read. ``aliases`` are the
    other accepted answers (never repeating ``answer``). ``category`` is ``search_free`` /
    ``search_required`` where known. ``extra`` keeps small per-source labels such as
    ``search_need`` or InfoSeek's ``answer_eval`` (plain JSON values only).
    """

    id: str
    question: str
    answer: str
    aliases: tuple[str, ...] = ()
    image: bytes | None = field(default=None, repr=False)
    image_path: str | None = None
    category: str | None = None
    source: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False)

    @property
    def golds(self) -> list[str]:
        """The answer followed by its aliases: what ``mmsr.rewards`` scores against."""
        return [self.answer, *self.aliases]
