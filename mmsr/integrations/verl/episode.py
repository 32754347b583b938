"""One mmsr rollout through an async token generator: the verl-free core of the agent loop.

``run_episode`` drives the same pure step as ``mmsr.rollout.RolloutEngine``
(``mmsr.rollout.step``: the turn parsed and judged, the search decided, its results rendered
as the next user turn, the ids and the loss mask extended within the token budget), with its
own I/O: each turn generated token-in/token-out by an awaited ``generate``, the searches run
with mmsr's backends off the event loop. The result is laid out as veRL wants it:
``prompt_ids`` (the first turn), then ``response_ids`` with ``response_mask`` 1 on generated
ids only, within veRL's response length. Not here: veRL's classes (``agent_loop``), the reward
(``reward``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from mmsr.config import build
from mmsr.protocol.prompts import PromptSet
from mmsr.protocol.render import RenderLimits, render_first_turn
from mmsr.rollout import step
from mmsr.rollout.engine import TurnEncoder
from mmsr.rollout.failures import ToolFailures, call_tool
from mmsr.rollout.rules import RolloutLimits
from mmsr.rollout.trajectory import EndReason, ToolCall
from mmsr.search.base import SearchBackends
from mmsr.types import Action, Role, Turn

VERL_LIMITS = RolloutLimits(max_new_tokens=1024)
"""The limits of a veRL run unless its settings say otherwise: the protocol's, with assistant
turns of up to 1,024 tokens. veRL bounds the whole sequence with its own prompt and response
lengths; ``max_total_tokens`` is not used there."""


def loop_limits(options: Mapping[str, Any]) -> RolloutLimits:
    """The limits an agent-loop registry entry sets (its ``RolloutLimits`` keys, e.g.
    ``max_turns: 2``) over ``VERL_LIMITS``; another key or a bad value is an error."""
    return build(RolloutLimits, {**asdict(VERL_LIMITS), **options})


@dataclass(frozen=True)
class Sampled:
    """What the generator returned for one turn: the ids as sampled (end-of-turn id included
    when generated) and their log-probs when asked for."""

    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...] | None = None


# generate(ids so far, images so far in placeholder order, max new tokens) -> the sampled turn
Generate = Callable[[list[int], list[Any], int], Awaitable[Sampled]]


@dataclass(frozen=True)
class EpisodeSetup:
    """What a rollout needs besides its question: the protocol, the tools and the tokens."""

    encoder: TurnEncoder
    """Ids of the injected user turns (mmsr's chat layout) and the ids never to generate."""
    decode: Callable[[list[int]], str]
    """Generated ids (without the end-of-turn id) to the turn's text."""
    end_ids: frozenset[int]
    """Ids that close an assistant turn; a turn not ending in one was cut at its limit."""
    tools: SearchBackends
    prompts: PromptSet
    limits: RolloutLimits = RolloutLimits()
    render_limits: RenderLimits = RenderLimits()
    response_length: int = 4096
    """veRL's ``rollout.response_length``: the most ids after the prompt."""
    prompt_length: int | None = None
    """veRL's ``rollout.prompt_length``: a longer first turn is a configuration error (its
    image pads cannot be cut)."""
    failures: ToolFailures = field(default_factory=ToolFailures)


@dataclass(frozen=True)
class Episode:
    """One finished rollout in veRL's layout, with mmsr's record of it."""

    prompt_ids: list[int]
    turns: list[Turn]
    response_ids: list[int]
    response_mask: list[int]
    """1: generated, 0: injected (tool turns)."""
    response_logprobs: list[float]
    actions: list[Action]
    tool_calls: list[ToolCall]
    end_reason: EndReason

    @classmethod
    def of(cls, state: step.RolloutState, n_prompt: int) -> Episode:
        """A finished state, its first ``n_prompt`` ids the prompt."""
        if state.end_reason is None:
            raise ValueError("the rollout has not ended")
        return cls(
            prompt_ids=state.token_ids[:n_prompt],
            turns=list(state.turns),
            response_ids=state.token_ids[n_prompt:],
            response_mask=state.loss_mask[n_prompt:],
            response_logprobs=state.logprobs[n_prompt:],
            actions=list(state.actions),
            tool_calls=list(state.tool_calls),
            end_reason=state.end_reason,
        )

    @property
    def images(self) -> list[Any]:
        """Every image of the conversation, in placeholder order."""
        return [image for turn in self.turns for image in turn.images]

    @property
    def assistant_texts(self) -> list[str]:
        return [t.text for t in self.turns if t.role is Role.ASSISTANT]

    def extra_fields(self) -> dict[str, Any]:
        """What veRL passes on to ``compute_score`` as ``extra_info`` (plain JSON values)."""
        return {
            "mmsr_turns": self.assistant_texts,
            "mmsr_actions": [asdict(a) | {"kind": a.kind.value} for a in self.actions],
            "mmsr_tool_calls": [
                {k: v for k, v in asdict(c).items() if k != "hits"} for c in self.tool_calls
            ],
            "mmsr_end_reason": str(self.end_reason),
        }


async def _tool_turn(
    state: step.RolloutState,
    request: step.SearchRequest,
    question: str,
    image: Any,
    setup: EpisodeSetup,
) -> None:
    """Run a search (in a thread; a failure becomes the observation) and add its turn."""
    hits, call = await asyncio.to_thread(
        call_tool,
        setup.tools,
        request.tool,
        image=image,
        query=request.query,
        question=question,
        k=request.k,
        failures=setup.failures,
        turn=request.turn,
    )
    turn = step.tool_turn(request, hits, call, question, setup.prompts, setup.render_limits)
    step.add_tool_turn(state, call, turn, setup.encoder.user_turn_ids(turn, first=False))


async def run_episode(
    question: str, image: Any, generate: Generate, setup: EpisodeSetup
) -> Episode:
    """Roll out one question about ``image`` with ``generate``."""
    first = render_first_turn(question, image, setup.prompts, setup.render_limits)
    prompt_ids = setup.encoder.user_turn_ids(first, first=True)
    if setup.prompt_length is not None and len(prompt_ids) > setup.prompt_length:
        raise ValueError(
            f"the first turn takes {len(prompt_ids)} ids, more than the prompt length "
            f"{setup.prompt_length}: raise rollout.prompt_length or lower the image resolution"
        )
    # veRL bounds the response alone: the budget of the whole sequence is the prompt plus it
    state = step.start(first, prompt_ids, budget=len(prompt_ids) + setup.response_length)
    while state.end_reason is None:
        sampled = await generate(
            list(state.token_ids), state.images, step.turn_budget(state, setup.limits)
        )
        ids = list(sampled.token_ids[: state.room])
        closed = bool(ids) and ids[-1] in setup.end_ids
        request = step.take_turn(
            state,
            setup.decode(ids[:-1] if closed else ids),
            ids,
            (sampled.logprobs or ())[: len(ids)],
            truncated=not closed,
            limits=setup.limits,
            forbidden_ids=setup.encoder.forbidden_ids,
        )
        if request is not None:
            await _tool_turn(state, request, question, image, setup)
    return Episode.of(state, len(prompt_ids))
