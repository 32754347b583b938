"""One rollout step as pure functions: the state machine that both rollout drivers run.

A rollout alternates between the policy and the tools. ``take_turn`` records a generated
assistant turn (its ids with loss mask 1), parses its action and either ends the rollout (an
answer, an invalid or cut turn, a limit) or returns the ``SearchRequest`` to run. The driver
runs it (``mmsr.rollout.failures.call_tool``), ``tool_turn`` renders the hits as the next user
turn, and ``add_tool_turn`` records the call and appends that turn (its ids with mask 0) — or
ends the rollout as ``context_full`` when its ids would not fit the token budget, before any
is added, so an image's pad run is never cut.

The drivers keep only their own I/O: ``mmsr.rollout.RolloutEngine`` batches generations and
runs the searches in threads; the veRL agent loop (``mmsr.integrations.verl.episode``) awaits
one generation at a time. Nothing here runs a policy or a tool, or imports torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from mmsr.protocol.prompts import PromptSet
from mmsr.protocol.render import RenderLimits, render_search_outcome
from mmsr.rollout.rules import RolloutLimits, end_reason, fits, search_request, turn_action
from mmsr.rollout.trajectory import EndReason, ToolCall, Trajectory
from mmsr.types import Action, Role, Turn


@dataclass
class RolloutState:
    """One trajectory while it runs.

    With a ``budget`` (token-level policies) it also keeps every id of the sequence exactly as
    it entered and left the model, 1 in ``loss_mask`` only where the policy generated the id.
    """

    turns: list[Turn]
    budget: int | None = None
    """The most ids of the whole sequence; None: a text-level policy, no ids kept."""
    actions: list[Action] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    image_searches: int = 0
    text_searches: int = 0
    end_reason: EndReason | None = None
    error: str | None = None
    """Why the policy could not continue (``end_reason`` is ``policy_error``)."""
    token_ids: list[int] = field(default_factory=list)
    loss_mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)

    @property
    def room(self) -> int:
        """Ids left within the budget."""
        if self.budget is None:
            raise ValueError("a text-level rollout has no token budget")
        return self.budget - len(self.token_ids)

    @property
    def images(self) -> list[Any]:
        """Every image of the conversation, in placeholder order."""
        return [image for turn in self.turns for image in turn.images]

    def add_ids(
        self, ids: Sequence[int], *, generated: bool, logprobs: Sequence[float] = ()
    ) -> None:
        self.token_ids.extend(ids)
        self.loss_mask.extend([1 if generated else 0] * len(ids))
        self.logprobs.extend(logprobs if generated and logprobs else [0.0] * len(ids))


@dataclass(frozen=True)
class SearchRequest:
    """The search an assistant turn asked for."""

    tool: Literal["image", "text"]
    query: str | None
    """The text search's query (None for the image search)."""
    k: int
    """Hits to ask for."""
    turn: int
    """Index of the assistant turn that asked (0-based)."""


def start(
    first: Turn,
    first_ids: Sequence[int] = (),
    *,
    budget: int | None = None,
    prefetched: Sequence[ToolCall] = (),
) -> RolloutState:
    """The state before the first assistant turn. ``prefetched``: searches made for the model
    before it (they count against the search limits). With a ``budget`` the first turn's ids
    are kept (mask 0); a first turn that leaves no room to generate ends it (``context_full``).
    """
    state = RolloutState(turns=[first], budget=budget, tool_calls=list(prefetched))
    state.image_searches = sum(call.tool == "image" for call in prefetched)
    state.text_searches = sum(call.tool == "text" for call in prefetched)
    if budget is not None:
        state.add_ids(first_ids, generated=False)
        if not fits(len(state.token_ids), 0, budget):
            state.end_reason = EndReason.CONTEXT_FULL
    return state


def turn_budget(state: RolloutState, limits: RolloutLimits) -> int:
    """The most ids the next assistant turn may have: the turn limit, within the room left."""
    if state.budget is None:
        return limits.max_new_tokens
    return min(limits.max_new_tokens, state.room)


def take_turn(
    state: RolloutState,
    text: str,
    ids: Sequence[int] = (),
    logprobs: Sequence[float] = (),
    *,
    truncated: bool,
    limits: RolloutLimits,
    forbidden_ids: Iterable[int] = frozenset(),
) -> SearchRequest | None:
    """Record a generated turn and decide what follows: the search to run (counted now), or
    None when the rollout ended (``state.end_reason`` says why). ``truncated``: the turn was
    cut at its token limit; ``forbidden_ids``: ids a turn must never hold (vision tokens)."""
    state.turns.append(Turn(Role.ASSISTANT, text))
    if state.budget is not None:
        state.add_ids(ids, generated=True, logprobs=logprobs)
    action = turn_action(text, ids, forbidden_ids)
    state.actions.append(action)
    state.end_reason = end_reason(
        action,
        truncated=truncated,
        n_turns=len(state.actions),
        image_searches=state.image_searches,
        text_searches=state.text_searches,
        limits=limits,
    )
    if state.end_reason is not None:
        return None
    tool, query, k = search_request(action, limits)
    if tool == "image":
        state.image_searches += 1
    else:
        state.text_searches += 1
    return SearchRequest(tool, query, k, turn=len(state.actions) - 1)


def fail_turn(state: RolloutState, error: str) -> None:
    """The policy generated no turn (e.g. a chat API refused the prompt): the rollout ends and
    nothing is recorded."""
    state.error, state.end_reason = error, EndReason.POLICY_ERROR


def tool_turn(
    request: SearchRequest,
    hits: Sequence[Any],
    call: ToolCall,
    question: str,
    prompts: PromptSet,
    render_limits: RenderLimits,
) -> Turn:
    """The user turn that shows a search's hits (or its failure) to the model."""
    return render_search_outcome(request.tool, hits, call.error, question, prompts, render_limits)


def add_tool_turn(
    state: RolloutState, call: ToolCall, turn: Turn, ids: Sequence[int] | None = None
) -> None:
    """Record the search and append its user turn with ``ids`` (token-level: required, mask 0);
    a turn whose ids do not fit the budget is not added and the rollout ends ``context_full``."""
    state.tool_calls.append(call)
    if state.budget is not None:
        if ids is None:
            raise ValueError("a token-level rollout needs the tool turn's ids")
        if not fits(len(state.token_ids), len(ids), state.budget):
            state.end_reason = EndReason.CONTEXT_FULL
            return
        state.add_ids(ids, generated=False)
    state.turns.append(turn)


def finish(state: RolloutState, id: str, question: str) -> Trajectory:
    """The finished rollout as a ``Trajectory``."""
    if state.end_reason is None:
        raise ValueError("the rollout has not ended")
    return Trajectory(
        id=id,
        question=question,
        turns=tuple(state.turns),
        actions=tuple(state.actions),
        tool_calls=tuple(state.tool_calls),
        end_reason=state.end_reason,
        token_ids=tuple(state.token_ids),
        loss_mask=tuple(state.loss_mask),
        logprobs=tuple(state.logprobs),
        error=state.error,
    )
