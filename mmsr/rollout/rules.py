"""The per-trajectory rules of the protocol, as pure functions.

What a generated turn means and whether the rollout goes on: the turn and search limits, no
search in the last allowed turn, the reason a rollout ends, and whether an injected tool turn
still fits the token budget. Both engines call these — mmsr's own ``RolloutEngine`` and the veRL
agent loop (``mmsr.integrations.verl``) — so the two cannot drift. Nothing here runs a tool,
holds state or imports torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from mmsr.protocol.actions import parse_action
from mmsr.rollout.trajectory import EndReason
from mmsr.types import Action, Answer, ImageSearch, Invalid, TextSearch


@dataclass(frozen=True)
class RolloutLimits:
    """The protocol's limits and the token budget of one rollout."""

    max_turns: int = 3
    """Most assistant turns; a search asked for in the last one ends the rollout."""
    max_image_searches: int = 1
    """Image searches allowed per rollout."""
    max_text_searches: int = 2
    """Text searches allowed per rollout."""
    max_new_tokens: int = 256
    """Longest assistant turn, in tokens."""
    max_total_tokens: int = 4096
    """Longest whole sequence (token-level policies); no tool turn is added past it."""
    image_k: int = 5
    """Image hits asked from the image search."""
    text_k: int = 5
    """Text hits asked from the text search."""


def turn_action(
    text: str, token_ids: Sequence[int] = (), forbidden_ids: Iterable[int] = frozenset()
) -> Action:
    """The action of a generated turn; a turn holding a forbidden (vision) id is invalid.

    >>> turn_action("<reason>r</reason><search><img></search>", [7, 8], {9})
    ImageSearch(kind=<ActionKind.IMAGE_SEARCH: 'image_search'>)
    >>> turn_action("<reason>r</reason><answer>x</answer>", [7, 9], {9}).kind.value
    'invalid'
    """
    if set(forbidden_ids).intersection(token_ids):
        return Invalid("generated a vision token")
    return parse_action(text)


def search_tool(action: Action) -> Literal["image", "text"] | None:
    """The tool a search action asks for, or ``None`` for an answer or an invalid turn."""
    if isinstance(action, ImageSearch):
        return "image"
    if isinstance(action, TextSearch):
        return "text"
    return None


def search_request(
    action: Action, limits: RolloutLimits
) -> tuple[Literal["image", "text"], str | None, int]:
    """What a search action runs: its tool, its query (text search only) and how many hits.

    >>> search_request(TextSearch(query="Peru capital"), RolloutLimits(text_k=3))
    ('text', 'Peru capital', 3)
    """
    tool = search_tool(action)
    if tool is None:
        raise ValueError(f"not a search action: {action!r}")
    query = action.query if isinstance(action, TextSearch) else None
    return tool, query, limits.image_k if tool == "image" else limits.text_k


def end_reason(
    action: Action,
    *,
    truncated: bool,
    n_turns: int,
    image_searches: int,
    text_searches: int,
    limits: RolloutLimits,
) -> EndReason | None:
    """Why the rollout ends after a generated turn, or ``None`` when its search must run.

    ``n_turns`` counts the assistant turns so far, this one included; ``truncated``: the turn
    was cut at its token limit; the search counts are those made before this turn.

    >>> end_reason(ImageSearch(), truncated=False, n_turns=3, image_searches=0,
    ...            text_searches=0, limits=RolloutLimits())
    <EndReason.SEARCH_IN_LAST_TURN: 'search_in_last_turn'>
    """
    if isinstance(action, Answer):
        return EndReason.ANSWERED
    if isinstance(action, Invalid):
        return EndReason.TRUNCATED if truncated else EndReason.INVALID_ACTION
    if truncated:  # a search tag at the very limit: the turn never closed
        return EndReason.TRUNCATED
    if n_turns >= limits.max_turns:
        return EndReason.SEARCH_IN_LAST_TURN
    if isinstance(action, ImageSearch) and image_searches >= limits.max_image_searches:
        return EndReason.SEARCH_LIMIT
    if isinstance(action, TextSearch) and text_searches >= limits.max_text_searches:
        return EndReason.SEARCH_LIMIT
    return None


def fits(n_used: int, n_added: int, budget: int) -> bool:
    """Whether ``n_added`` injected tokens after ``n_used`` leave room for one generated token
    within ``budget``; a tool turn that does not fit ends the rollout (``CONTEXT_FULL``) before
    it is added, so an image's pad run is never cut.

    >>> fits(10, 5, 16), fits(10, 6, 16)
    (True, False)
    """
    return n_used + n_added + 1 <= budget
