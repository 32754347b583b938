"""One rollout step, two drivers: the same scripted conversations through mmsr's
``RolloutEngine`` (batched, tool threads) and the veRL episode (async generation) give the same
ids, loss mask, log-probs and end reason — both run ``mmsr.rollout.step``.

The policy side is scripted: fixed token ids per assistant turn (the tiny tokenizer's ids of
the text, then ``<|im_end|>``), sampled by a token-level policy for the engine and by an async
"server" for the episode. The tools return fixed hits, or fail.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
import tiny_models
from verl_scripts import (
    ANSWER,
    IMG,
    QUESTION,
    TXT,
    Pages,
    Thumbs,
    TokenScriptPolicy,
    decode,
    end_ids,
    reply_ids,
    turn_encoder,
)

from mmsr.integrations.verl.episode import Episode, EpisodeSetup, Sampled, run_episode
from mmsr.protocol import default_prompt_set, render_first_turn
from mmsr.rollout import (
    EndReason,
    RolloutEngine,
    RolloutLimits,
    RolloutTask,
    ToolCall,
    Trajectory,
    step,
)
from mmsr.search.base import SearchBackends, SearchError
from mmsr.types import Role, Turn

ENCODER = turn_encoder()
IMAGE = tiny_models.image()
PROMPT_IDS = ENCODER.user_turn_ids(
    render_first_turn(QUESTION, IMAGE, default_prompt_set()), first=True
)


class LensDown:
    """An image search that fails as the outside world does."""

    def search(self, image: Any, k: int) -> list[Any]:
        raise SearchError("lens timed out", tool="image")


class BrokenPages:
    """A text search that breaks its contract (a bug in a backend)."""

    def search(self, query: str, k: int, question: str | None = None) -> list[Any]:
        raise RuntimeError("nested too deeply")


def _sampled(replies: Sequence[list[int]], n: int, max_tokens: int) -> list[int]:
    return replies[n][:max_tokens]


class ServerScript:
    """The episode's side: an async server returning turn n's scripted ids."""

    def __init__(self, replies: Sequence[list[int]]) -> None:
        self.replies, self.n = list(replies), 0

    async def __call__(self, ids: list[int], images: list[Any], max_tokens: int) -> Sampled:
        out = _sampled(self.replies, self.n, max_tokens)
        self.n += 1
        return Sampled(tuple(out), tuple(-0.5 - 0.01 * i for i in range(len(out))))


@dataclass(frozen=True)
class Script:
    texts: tuple[str, ...]
    end: EndReason
    limits: RolloutLimits = dataclasses.field(default_factory=RolloutLimits)
    tools: SearchBackends = SearchBackends(Thumbs(), Pages())  # type: ignore[arg-type]
    response_length: int = 4096
    """veRL's budget after the prompt; the engine gets the prompt plus this."""


def _replies(texts: Sequence[str]) -> list[list[int]]:
    return [reply_ids(ENCODER, t) for t in texts]


SCRIPTS = {
    # answers at once
    "direct answer": Script((ANSWER,), EndReason.ANSWERED),
    # image search, then the answer
    "image then answer": Script((IMG, ANSWER), EndReason.ANSWERED),
    # image search, text search, then the answer
    "image, text, answer": Script((IMG, TXT, ANSWER), EndReason.ANSWERED),
    # no action in the turn
    "malformed turn": Script(("<reason>thinking</reason>",), EndReason.INVALID_ACTION),
    # a search asked for in the last allowed turn
    "turn limit": Script((IMG, TXT), EndReason.SEARCH_IN_LAST_TURN, RolloutLimits(max_turns=2)),
    # a second image search is past the search limit
    "search limit": Script((IMG, IMG), EndReason.SEARCH_LIMIT),
    # the image search fails: the model sees the failure and answers
    "failing tool": Script(
        (IMG, ANSWER),
        EndReason.ANSWERED,
        tools=SearchBackends(LensDown(), Pages()),  # type: ignore[arg-type]
    ),
    # the text search raises a backend bug: still only an observation
    "broken tool": Script(
        (TXT, ANSWER),
        EndReason.ANSWERED,
        tools=SearchBackends(Thumbs(), BrokenPages()),  # type: ignore[arg-type]
    ),
    # room for the search turn, not for the results with their thumbnails
    "token budget exhausted": Script(
        (IMG, ANSWER), EndReason.CONTEXT_FULL, response_length=len(reply_ids(ENCODER, IMG)) + 10
    ),
    # a turn cut at the turn limit never closed
    "turn cut at max_new_tokens": Script(
        (IMG, ANSWER), EndReason.TRUNCATED, RolloutLimits(max_new_tokens=5)
    ),
}


def _through_engine(script: Script) -> Trajectory:
    budget = len(PROMPT_IDS) + script.response_length
    engine = RolloutEngine(
        TokenScriptPolicy(_replies(script.texts), lambda i: -0.5 - 0.01 * i),
        image_search=script.tools.image,
        text_search=script.tools.text,
        encoder=ENCODER,
        limits=dataclasses.replace(script.limits, max_total_tokens=budget),
    )
    (traj,) = engine.run([RolloutTask("q", QUESTION, IMAGE)], seeds=[0])
    return traj


def _through_episode(script: Script) -> Episode:
    setup = EpisodeSetup(
        encoder=ENCODER,
        decode=decode,
        end_ids=end_ids(),
        tools=script.tools,
        prompts=default_prompt_set(),
        limits=script.limits,
        response_length=script.response_length,
    )
    server = ServerScript(_replies(script.texts))
    return asyncio.run(run_episode(QUESTION, IMAGE, server, setup))


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_both_drivers_give_the_same_rollout(name: str) -> None:
    script = SCRIPTS[name]
    traj, episode = _through_engine(script), _through_episode(script)
    assert traj.end_reason is episode.end_reason is script.end
    n = len(episode.prompt_ids)
    assert episode.prompt_ids == PROMPT_IDS
    assert list(traj.token_ids) == episode.prompt_ids + episode.response_ids
    assert list(traj.loss_mask) == [0] * n + episode.response_mask
    assert list(traj.logprobs) == [0.0] * n + episode.response_logprobs
    assert traj.assistant_texts == episode.assistant_texts
    assert list(traj.actions) == episode.actions
    calls = [(c.tool, c.query, c.n_hits, c.error, c.turn) for c in traj.tool_calls]
    assert calls == [(c.tool, c.query, c.n_hits, c.error, c.turn) for c in episode.tool_calls]
    assert len(traj.images) == len(episode.images)
    # the loss-mask invariant: mask 1 on exactly the ids the policy generated, in order
    generated = [i for i, m in zip(traj.token_ids, traj.loss_mask, strict=True) if m]
    replies = _replies(script.texts)[: len(traj.assistant_texts)]
    assert generated == [i for r in replies for i in r[: script.limits.max_new_tokens]]


def test_a_failed_search_is_recorded_and_shown_to_the_model() -> None:
    traj = _through_engine(SCRIPTS["failing tool"])
    (call,) = traj.tool_calls
    assert call.error == "lens timed out" and call.n_hits == 0
    assert "lens timed out" in traj.turns[2].text  # the observation turn
    broken = _through_engine(SCRIPTS["broken tool"])
    assert broken.tool_calls[0].error == "text search failed unexpectedly (RuntimeError)"


def test_the_step_alone_counts_searches_and_guards_the_budget() -> None:
    first = Turn(Role.USER, "q")
    state = step.start(first, [1, 2, 3], budget=12)
    assert state.loss_mask == [0, 0, 0] and step.turn_budget(state, RolloutLimits()) == 9
    limits = RolloutLimits(image_k=4)
    request = step.take_turn(state, IMG, [7, 8], [-0.1, -0.2], truncated=False, limits=limits)
    assert request == step.SearchRequest("image", None, 4, turn=0)
    assert (state.image_searches, state.loss_mask) == (1, [0, 0, 0, 1, 1])
    assert state.logprobs == [0.0, 0.0, 0.0, -0.1, -0.2]
    # a tool turn that leaves no room for one generated id is not added at all
    call = ToolCall(0, "image", None, 3, None, 0.0)
    step.add_tool_turn(state, call, Turn(Role.USER, "hits"), [9] * 7)
    assert state.end_reason is EndReason.CONTEXT_FULL
    assert len(state.token_ids) == 5 and state.tool_calls == [call] and len(state.turns) == 2
    # text-level rollouts keep no ids
    text_only = step.start(first)
    assert step.take_turn(text_only, ANSWER, truncated=False, limits=RolloutLimits()) is None
    assert text_only.end_reason is EndReason.ANSWERED and text_only.token_ids == []
