"""One mmsr rollout through an async token generator: the verl-free core of the agent loop.

``run_episode`` is the same state machine as ``mmsr.rollout.RolloutEngine`` for one trajectory
— first turn rendered by ``mmsr.protocol``, each turn generated token-in/token-out, parsed and
judged by ``mmsr.rollout.rules``, searched with mmsr's backends (off the event loop), the
results rendered as the next user turn — but laid out as veRL wants it: ``prompt_ids`` (the
first turn), then ``response_ids`` with ``response_mask`` 1 on generated ids only, within a
response budget. A tool turn that would not fit ends the rollout before it is added, so an
image's pad run is never cut. Not here: veRL's classes (``agent_loop``), the reward (``reward``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from mmsr.protocol.prompts import PromptSet
from mmsr.protocol.render import (
    RenderLimits,
    render_first_turn,
    render_search_outcome,
)
from mmsr.rollout.engine import TurnEncoder
from mmsr.rollout.failures import ToolFailures, call_tool
from mmsr.rollout.rules import RolloutLimits, end_reason, fits, search_request, turn_action
from mmsr.rollout.trajectory import EndReason, ToolCall
from mmsr.search.base import SearchBackends
from mmsr.types import Action, Role, Turn


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


@dataclass
class Episode:
    """One finished rollout in veRL's layout, with mmsr's record of it."""

    prompt_ids: list[int]
    turns: list[Turn]
    response_ids: list[int] = field(default_factory=list)
    response_mask: list[int] = field(default_factory=list)  # 1: generated, 0: injected
    response_logprobs: list[float] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    end_reason: EndReason | None = None
    image_searches: int = 0
    text_searches: int = 0

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


async def _search(episode: Episode, question: str, image: Any, setup: EpisodeSetup) -> Turn:
    """Run the search the last action asked for (in a thread); failures are observations."""
    tool, query, k = search_request(episode.actions[-1], setup.limits)
    if tool == "image":
        episode.image_searches += 1
    else:
        episode.text_searches += 1
    hits, call = await asyncio.to_thread(
        call_tool,
        setup.tools,
        tool,
        image=image,
        query=query,
        question=question,
        k=k,
        failures=setup.failures,
        turn=len(episode.actions) - 1,
    )
    episode.tool_calls.append(call)
    return render_search_outcome(
        tool, hits, call.error, question, setup.prompts, setup.render_limits
    )


def _add(
    episode: Episode, ids: Sequence[int], *, generated: bool, logprobs: Sequence[float] = ()
) -> None:
    episode.response_ids.extend(ids)
    episode.response_mask.extend([1 if generated else 0] * len(ids))
    episode.response_logprobs.extend(logprobs if generated and logprobs else [0.0] * len(ids))


async def run_episode(
    question: str, image: Any, generate: Generate, setup: EpisodeSetup
) -> Episode:
    """Roll out one question about ``image`` with ``generate``."""
    first = render_first_turn(question, image, setup.prompts, setup.render_limits)
    episode = Episode(setup.encoder.user_turn_ids(first, first=True), [first])
    if setup.prompt_length is not None and len(episode.prompt_ids) > setup.prompt_length:
        raise ValueError(
            f"the first turn takes {len(episode.prompt_ids)} ids, more than the prompt length "
            f"{setup.prompt_length}: raise rollout.prompt_length or lower the image resolution"
        )
    limits = setup.limits
    while True:
        room = setup.response_length - len(episode.response_ids)
        sampled = await generate(
            episode.prompt_ids + episode.response_ids,
            episode.images,
            max(1, min(limits.max_new_tokens, room)),
        )
        ids = list(sampled.token_ids[:room])
        closed = bool(ids) and ids[-1] in setup.end_ids
        _add(episode, ids, generated=True, logprobs=(sampled.logprobs or ())[: len(ids)])
        text = setup.decode(ids[:-1] if closed else ids)
        episode.turns.append(Turn(Role.ASSISTANT, text))
        action = turn_action(text, ids, setup.encoder.forbidden_ids)
        episode.actions.append(action)
        episode.end_reason = end_reason(
            action,
            truncated=not closed,
            n_turns=len(episode.actions),
            image_searches=episode.image_searches,
            text_searches=episode.text_searches,
            limits=limits,
        )
        if episode.end_reason is not None:
            return episode
        turn = await _search(episode, question, image, setup)
        turn_ids = setup.encoder.user_turn_ids(turn, first=False)
        if not fits(len(episode.response_ids), len(turn_ids), setup.response_length):
            episode.end_reason = EndReason.CONTEXT_FULL
            return episode
        _add(episode, turn_ids, generated=False)
        episode.turns.append(turn)
