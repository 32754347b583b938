"""The agent loop's verl-free core (mmsr.integrations.verl.episode) against mmsr's own engine.

A scripted "server" returns fixed token ids per turn; the same script through
``RolloutEngine`` (a token-level scripted policy, the same chat encoder) must give the same
ids, mask, turns and end reason, laid out as veRL's prompt + response.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
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
    segments,
    turn_encoder,
)

from mmsr.integrations.verl.episode import Episode, EpisodeSetup, Sampled, run_episode
from mmsr.protocol import default_prompt_set
from mmsr.rollout import EndReason, RolloutEngine, RolloutLimits, RolloutTask
from mmsr.search.base import SearchBackends
from mmsr.types import Role

ENCODER = turn_encoder()


class ScriptedServer:
    """Returns the scripted ids of turn n on its n-th call; records what it was sent."""

    def __init__(self, replies: Sequence[list[int]]) -> None:
        self.replies = list(replies)
        self.calls: list[tuple[list[int], list[Any], int]] = []

    async def __call__(self, ids: list[int], images: list[Any], max_tokens: int) -> Sampled:
        self.calls.append((list(ids), list(images), max_tokens))
        out = self.replies[len(self.calls) - 1][:max_tokens]
        return Sampled(tuple(out), tuple(-0.25 for _ in out))


def _setup(limits: RolloutLimits | None = None, response_length: int = 4096) -> EpisodeSetup:
    return EpisodeSetup(
        encoder=ENCODER,
        decode=decode,
        end_ids=end_ids(),
        tools=SearchBackends(Thumbs(), Pages()),
        prompts=default_prompt_set(),
        limits=limits or RolloutLimits(),
        response_length=response_length,
    )


def _episode(replies: Sequence[list[int]], setup: EpisodeSetup) -> tuple[Episode, ScriptedServer]:
    server = ScriptedServer(replies)
    episode = asyncio.run(run_episode(QUESTION, tiny_models.image(), server, setup))
    return episode, server


def _ids(*texts: str) -> list[list[int]]:
    return [reply_ids(ENCODER, t) for t in texts]


@pytest.mark.parametrize(
    ("texts", "end"),
    [
        # image search, text search, answer
        ((IMG, TXT, ANSWER), EndReason.ANSWERED),
        # answers at once
        ((ANSWER,), EndReason.ANSWERED),
        # a search in the last turn ends the rollout unanswered
        ((IMG, TXT, TXT), EndReason.SEARCH_IN_LAST_TURN),
        # a second image search is past the limit
        ((IMG, IMG), EndReason.SEARCH_LIMIT),
    ],
)
def test_same_ids_and_mask_as_mmsr_engine(texts: tuple[str, ...], end: EndReason) -> None:
    replies = _ids(*texts)
    episode, _ = _episode(replies, _setup())
    engine = RolloutEngine(
        TokenScriptPolicy(replies),
        image_search=Thumbs(),
        text_search=Pages(),
        encoder=ENCODER,
        limits=RolloutLimits(max_total_tokens=len(episode.prompt_ids) + 4096),
    )
    (traj,) = engine.run([RolloutTask("q", QUESTION, tiny_models.image())], seeds=[0])
    assert traj.end_reason is episode.end_reason is end
    assert list(traj.token_ids) == episode.prompt_ids + episode.response_ids
    assert list(traj.loss_mask) == [0] * len(episode.prompt_ids) + episode.response_mask
    assert traj.assistant_texts == episode.assistant_texts == list(texts)
    assert [a.kind for a in traj.actions] == [a.kind for a in episode.actions]
    assert [c.tool for c in traj.tool_calls] == [c.tool for c in episode.tool_calls]
    assert len(traj.images) == len(episode.images)


def test_mask_segments_images_and_pads() -> None:
    replies = _ids(IMG, TXT, ANSWER)
    episode, server = _episode(replies, _setup())
    # prompt: the first turn only; response: generated (1) and injected (0) runs alternate
    first = episode.turns[0]
    assert episode.prompt_ids == ENCODER.user_turn_ids(first, first=True)
    tool_turns = [t for t in episode.turns[1:] if t.role is Role.USER]
    injected = [len(ENCODER.user_turn_ids(t, first=False)) for t in tool_turns]
    expected = [(1, len(replies[0])), (0, injected[0]), (1, len(replies[1]))]
    expected += [(0, injected[1]), (1, len(replies[2]))]
    assert segments(episode.response_mask) == expected
    # the generated runs are exactly the server's ids
    generated = [i for i, m in zip(episode.response_ids, episode.response_mask, strict=True) if m]
    assert generated == [i for r in replies for i in r]
    assert episode.response_logprobs[: len(replies[0])] == [-0.25] * len(replies[0])
    # images in placeholder order: the question's, then the two thumbnails (one hit has none)
    thumbs = [h.thumbnail for h in Thumbs().search(None, 5) if h.thumbnail is not None]
    assert [im.size for im in episode.images] == [tiny_models.image().size] + [
        t.size for t in thumbs
    ]
    # every image's pad run is whole: pads = its token count, the order as the server was sent
    pad = ENCODER.encoder.image_pad_id
    all_ids = episode.prompt_ids + episode.response_ids
    processor = ENCODER.encoder.image_processor
    assert all_ids.count(pad) == sum(processor(im).num_tokens for im in episode.images)
    assert [len(images) for _, images, _ in server.calls] == [1, 3, 3]
    assert server.calls[-1][0] == all_ids[: -len(replies[2])]


def test_a_tool_turn_that_does_not_fit_ends_the_rollout_before_it() -> None:
    replies = _ids(IMG, ANSWER)
    # room for the search turn and a few ids, not for the results with their thumbnails
    budget = len(replies[0]) + 10
    episode, server = _episode(replies, _setup(response_length=budget))
    assert episode.end_reason is EndReason.CONTEXT_FULL
    assert episode.response_ids == replies[0] and episode.response_mask == [1] * len(replies[0])
    assert len(server.calls) == 1 and len(episode.images) == 1
    assert ENCODER.encoder.image_pad_id not in episode.response_ids
    assert len(episode.tool_calls) == 1  # the search ran; its turn did not fit


def test_turn_budget_and_truncation() -> None:
    replies = _ids(IMG, ANSWER)
    limits = RolloutLimits(max_new_tokens=5)
    episode, server = _episode(replies, _setup(limits=limits))
    # each turn asks for at most max_new_tokens; a turn cut there never closed
    assert server.calls[0][2] == 5 and len(episode.response_ids) == 5
    assert episode.end_reason is EndReason.TRUNCATED


def test_extra_fields_are_plain_records() -> None:
    episode, _ = _episode(_ids(IMG, ANSWER), _setup())
    extra = episode.extra_fields()
    assert extra["mmsr_turns"] == [IMG, ANSWER]
    assert [a["kind"] for a in extra["mmsr_actions"]] == ["image_search", "answer"]
    assert extra["mmsr_tool_calls"][0]["tool"] == "image"
    assert extra["mmsr_tool_calls"][0]["n_hits"] == 3
    assert extra["mmsr_end_reason"] == "answered"


def test_a_first_turn_longer_than_the_prompt_length_is_a_config_error() -> None:
    setup = _setup()
    setup = EpisodeSetup(**{**setup.__dict__, "prompt_length": 10})
    with pytest.raises(ValueError, match="prompt length"):
        _episode(_ids(ANSWER), setup)
