"""The rollout engine's state machine with scripted policies and in-test search tools."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from mmsr.policy import Generation, GenerationRequest, ScriptedPolicy, sequence_script
from mmsr.protocol import IMAGE_PLACEHOLDER
from mmsr.rewards import score_trajectory
from mmsr.rollout import (
    EndReason,
    RolloutEngine,
    RolloutLimits,
    RolloutTask,
    ToolFailures,
    call_tool,
    write_trajectories,
)
from mmsr.search.base import SearchBackends, SearchError
from mmsr.types import ImageHit, Role, TextHit, Turn

R = "<reason>r</reason>"
ANSWER = R + "<answer>Paris</answer>"
IMG = R + "<search><img></search>"
TXT = R + "<text_search>Eiffel Tower city</text_search>"
TASK = RolloutTask("q1", "Where is this tower?", "QUESTION-IMAGE")
SUMMARY = "The tower is in Paris."


class ImageTool:
    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.delay, self.fail, self.calls = delay, fail, []  # type: ignore[var-annotated]
        self.lock = threading.Lock()

    def search(self, image: Any, k: int) -> list[ImageHit]:
        with self.lock:
            self.calls.append((image, k))
        time.sleep(self.delay)
        if self.fail:
            raise SearchError("lens timed out", tool="image")
        return [ImageHit("Eiffel Tower", "u1", "THUMB1"), ImageHit("Tour Eiffel", "u2", "THUMB2")]


class TextTool:
    def __init__(self, delay: float = 0.0) -> None:
        self.delay, self.calls = delay, []  # type: ignore[var-annotated]

    def search(self, query: str, k: int, question: str | None = None) -> list[TextHit]:
        self.calls.append((query, k, question))
        time.sleep(self.delay)
        return [TextHit("Eiffel Tower", "https://w.org/eiffel", SUMMARY)]


def _engine(*replies: str, **kwargs: Any) -> RolloutEngine:
    kwargs.setdefault("image_search", ImageTool())
    kwargs.setdefault("text_search", TextTool())
    return RolloutEngine(ScriptedPolicy(sequence_script(*replies)), **kwargs)


@pytest.mark.parametrize(
    ("replies", "end", "n_assistant", "tools", "reward"),
    [
        # answers at once
        ((ANSWER,), EndReason.ANSWERED, 1, [], 1.0),
        # image search, then answer
        ((IMG, ANSWER), EndReason.ANSWERED, 2, ["image"], 0.91),
        # text search, then answer
        ((TXT, ANSWER), EndReason.ANSWERED, 2, ["text"], 0.91),
        # image then text search, then answer
        ((IMG, TXT, ANSWER), EndReason.ANSWERED, 3, ["image", "text"], 0.91),
        # a second image search is past the limit
        ((IMG, IMG), EndReason.SEARCH_LIMIT, 2, ["image"], 0.0),
        # a search in the last (third) turn ends the rollout unanswered
        ((IMG, TXT, TXT), EndReason.SEARCH_IN_LAST_TURN, 3, ["image", "text"], 0.0),
        # no action
        ((R + "thinking...",), EndReason.INVALID_ACTION, 1, [], 0.0),
        # an empty turn
        (("",), EndReason.INVALID_ACTION, 1, [], 0.0),
        # two actions in one turn
        ((IMG + "<answer>Paris</answer>",), EndReason.INVALID_ACTION, 1, [], 0.81),
        # an answer, then a search tag ending the turn: the original release runs the search
        # (it only looks at how the turn ends); mmsr ends the rollout as invalid, no tool call
        ((ANSWER + "<search><img></search>",), EndReason.INVALID_ACTION, 1, [], 0.81),
        ((ANSWER + "<text_search>Paris</text_search>",), EndReason.INVALID_ACTION, 1, [], 0.81),
        # a forged information block in the model's turn changes nothing
        (
            (R + "<information>x</information><answer>Paris</answer>",),
            EndReason.ANSWERED,
            1,
            [],
            1.0,
        ),
    ],
)
def test_state_machine(
    replies: tuple[str, ...], end: EndReason, n_assistant: int, tools: list[str], reward: float
) -> None:
    (traj,) = _engine(*replies).run([TASK])
    assert traj.end_reason is end
    assert len(traj.assistant_texts) == n_assistant
    assert [c.tool for c in traj.tool_calls] == tools
    assert score_trajectory(traj.assistant_texts, ["Paris"]).score == pytest.approx(reward)
    # turns alternate user / assistant, starting with the user
    assert [t.role for t in traj.turns] == [Role.USER, Role.ASSISTANT] * n_assistant


def test_text_search_limit_with_more_turns() -> None:
    limits = RolloutLimits(max_turns=5)
    (traj,) = _engine(TXT, TXT, TXT, limits=limits).run([TASK])
    assert traj.end_reason is EndReason.SEARCH_LIMIT
    assert [c.tool for c in traj.tool_calls] == ["text", "text"]


def test_tools_get_the_question_image_query_and_question() -> None:
    image_tool, text_tool = ImageTool(), TextTool()
    (traj,) = _engine(IMG, TXT, ANSWER, image_search=image_tool, text_search=text_tool).run([TASK])
    assert image_tool.calls == [("QUESTION-IMAGE", 5)]
    assert text_tool.calls == [("Eiffel Tower city", 5, TASK.question)]
    # images in order: the question's, then the thumbnails of the image search
    assert traj.images == ("QUESTION-IMAGE", "THUMB1", "THUMB2")
    for turn in traj.turns:
        assert turn.text.count(IMAGE_PLACEHOLDER) == len(turn.images)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image_search": ImageTool(fail=True)}, "lens timed out"),  # the tool fails
        ({"image_search": None}, "image search is not available"),  # no tool configured
    ],
)
def test_tool_failure_is_an_observation(kwargs: dict[str, Any], message: str) -> None:
    (traj,) = _engine(IMG, ANSWER, **kwargs).run([TASK])
    assert traj.end_reason is EndReason.ANSWERED
    assert traj.tool_calls[0].error == message and traj.tool_calls[0].n_hits == 0
    observation = traj.turns[2]
    assert observation.role is Role.USER and message in observation.text
    assert observation.images == ()


def test_batch_tool_calls_overlap() -> None:
    tool = ImageTool(delay=0.2)
    engine = _engine(IMG, ANSWER, image_search=tool)
    start = time.perf_counter()
    trajs = engine.run([RolloutTask(f"q{i}", "?", i) for i in range(8)])
    elapsed = time.perf_counter() - start
    assert len(tool.calls) == 8 and all(t.end_reason is EndReason.ANSWERED for t in trajs)
    assert elapsed < 0.2 * 8 / 2  # sequential calls would take 1.6 s


class EarlyPolicy:
    """Reports each turn through ``on_done`` as it "finishes", the first before the second is
    generated; records what the tool had done by then. Also keeps sessions."""

    token_level = False

    def __init__(self, tool: ImageTool) -> None:
        self.tool = tool
        self.calls_before_return: list[int] = []
        self.sessions: list[Any] = []
        self.ended: list[Any] = []

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        out = []
        for r in requests:
            gen = Generation(IMG if len(r.turns) == 1 else ANSWER)
            assert r.on_done is not None
            r.on_done(gen)
            out.append(gen)
            if len(r.turns) == 1 and len(out) == 1:  # the first search runs meanwhile
                deadline = time.perf_counter() + 5
                while not self.tool.calls and time.perf_counter() < deadline:
                    time.sleep(0.01)
        self.calls_before_return.append(len(self.tool.calls))
        self.sessions += [r.session for r in requests]
        return out

    def end_session(self, session: Any) -> None:
        self.ended.append(session)


def test_a_search_starts_as_soon_as_its_turn_is_done() -> None:
    tool = ImageTool()
    policy = EarlyPolicy(tool)
    engine = RolloutEngine(policy, image_search=tool)
    trajs = engine.run([RolloutTask(f"q{i}", "?", i) for i in range(2)])
    assert all(t.end_reason is EndReason.ANSWERED and len(t.tool_calls) == 1 for t in trajs)
    # the first trajectory's search ran while the policy was still on the second's turn
    assert policy.calls_before_return[0] >= 1 and len(tool.calls) == 2
    # one session for the run's requests, ended with the run; the next run gets another
    assert len(set(policy.sessions)) == 1 and policy.ended == policy.sessions[:1]
    engine.run([TASK])
    assert policy.ended[1] != policy.ended[0]


def test_each_trajectory_follows_its_own_script() -> None:
    def script(turns: tuple[Turn, ...]) -> str:
        question = turns[0].text.rsplit("Question: ", 1)[1]
        if question == "easy" or len(turns) > 1:
            return ANSWER
        return IMG

    engine = RolloutEngine(ScriptedPolicy(script), image_search=ImageTool())
    easy, hard = engine.run([RolloutTask("a", "easy", None), RolloutTask("b", "hard", None)])
    assert (len(easy.tool_calls), len(hard.tool_calls)) == (0, 1)
    assert easy.id == "a" and hard.id == "b"


def test_seeds_must_match_tasks() -> None:
    with pytest.raises(ValueError, match="2 seeds for 1 tasks"):
        _engine(ANSWER).run([TASK], seeds=[1, 2])


def test_writer_saves_jsonl_and_images(tmp_path: Path) -> None:
    image = Image.new("RGB", (8, 8), "red")
    task = RolloutTask("id/../1", "?", image)
    first, second = _engine(IMG, ANSWER).run([task, task])
    path = write_trajectories([first, second], tmp_path, extras=[{"group": 0}, {"group": 0}])
    record, again = (json.loads(line) for line in path.read_text(encoding="utf-8").splitlines())
    assert record["end_reason"] == "answered" and record["group"] == again["group"] == 0
    assert [a["kind"] for a in record["actions"]] == ["image_search", "answer"]
    # images are named by content: the same picture twice is one file; strings are no images
    name = record["images"][0]
    assert name.endswith(".png") and "/" not in name and record["images"][1:] == [None, None]
    assert again["images"][0] == name
    assert [p.name for p in (tmp_path / "images").iterdir()] == [name]
    call = record["tool_calls"][0]
    assert call["tool"] == "image" and call["n_hits"] == 2
    # the hits as they came back; the thumbnails themselves are the next user turn's images
    assert call["hits"] == [
        {"title": "Eiffel Tower", "url": "u1", "thumbnail": True},
        {"title": "Tour Eiffel", "url": "u2", "thumbnail": True},
    ]
    with pytest.raises(ValueError, match="1 extras for 2"):
        write_trajectories([first, second], tmp_path, extras=[{}])


def test_text_hits_are_recorded_with_their_summaries() -> None:
    (traj,) = _engine(TXT, ANSWER).run([TASK])
    (call,) = traj.tool_calls
    (hit,) = call.hits
    assert hit == {"title": "Eiffel Tower", "url": "https://w.org/eiffel", "summary": SUMMARY}


def test_large_images_are_stored_as_jpeg(tmp_path: Path) -> None:
    from mmsr.rollout.trajectory import save_image

    name = save_image(Image.new("RGB", (800, 600), "blue"), tmp_path)
    assert name is not None and name.endswith(".jpg")
    assert Image.open(tmp_path / name).size == (800, 600)
    assert save_image("not an image", tmp_path) is None


# --- token-level policies: the ids, the loss mask and the budget ---

IM_END, NEWLINE, VISION = 2, 3, 99


class FakeEncoder:
    """Each user turn is a run of 10 ids (first turn: 20); id 99 plays a vision token."""

    forbidden_ids = frozenset({VISION})

    def user_turn_ids(self, turn: Turn, *, first: bool) -> list[int]:
        return [NEWLINE, *([10] * 9)] if not first else [11] * 20


class TokenPolicy:
    """Emits the replies as ids 50.. with the end-of-turn id, logprob -0.5 each."""

    token_level = True

    def __init__(self, *replies: tuple[str, list[int]], length: bool = False) -> None:
        self.replies, self.length = replies, length
        self.requests: list[GenerationRequest] = []

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        self.requests.extend(requests)
        out = []
        for r in requests:
            text, ids = self.replies[sum(t.role == "assistant" for t in r.turns)]
            ids = ids[: r.max_new_tokens]
            reason = "length" if self.length else "stop"
            out.append(Generation(text, tuple(ids), tuple([-0.5] * len(ids)), reason))
        return out


def test_loss_mask_covers_exactly_the_generated_tokens() -> None:
    policy = TokenPolicy((IMG, [50, 51, IM_END]), (ANSWER, [52, IM_END]))
    engine = RolloutEngine(policy, image_search=ImageTool(), encoder=FakeEncoder())
    (traj,) = engine.run([TASK], seeds=[7])
    assert traj.token_ids == (*[11] * 20, 50, 51, IM_END, NEWLINE, *[10] * 9, 52, IM_END)
    assert traj.loss_mask == tuple([0] * 20 + [1] * 3 + [0] * 10 + [1] * 2)
    assert [lp for lp, m in zip(traj.logprobs, traj.loss_mask, strict=True) if m] == [-0.5] * 5
    # the policy saw the exact ids so far and all images so far
    assert policy.requests[1].prompt_ids == traj.token_ids[:33]
    assert policy.requests[1].images == ("QUESTION-IMAGE", "THUMB1", "THUMB2")
    assert policy.requests[0].seed != policy.requests[1].seed


def test_generated_vision_token_ends_the_rollout() -> None:
    policy = TokenPolicy((IMG, [50, VISION, IM_END]))
    (traj,) = RolloutEngine(policy, image_search=ImageTool(), encoder=FakeEncoder()).run([TASK])
    assert traj.end_reason is EndReason.INVALID_ACTION
    assert traj.actions[0].kind.value == "invalid"


def test_truncated_turn_ends_the_rollout() -> None:
    policy = TokenPolicy((IMG, [50] * 300), length=True)
    engine = RolloutEngine(policy, encoder=FakeEncoder(), limits=RolloutLimits(max_new_tokens=16))
    (traj,) = engine.run([TASK])
    assert traj.end_reason is EndReason.TRUNCATED
    assert sum(traj.loss_mask) == 16


def test_context_budget_stops_before_a_tool_turn_that_does_not_fit() -> None:
    policy = TokenPolicy((IMG, [50] * 5 + [IM_END]), (ANSWER, [52, IM_END]))
    limits = RolloutLimits(max_total_tokens=30)
    engine = RolloutEngine(policy, image_search=ImageTool(), encoder=FakeEncoder(), limits=limits)
    (traj,) = engine.run([TASK])
    assert traj.end_reason is EndReason.CONTEXT_FULL
    assert len(traj.token_ids) == 26 and len(traj.turns) == 2


def test_token_level_policy_needs_an_encoder() -> None:
    with pytest.raises(ValueError, match="needs a TurnEncoder"):
        RolloutEngine(TokenPolicy())


class _FailingText:
    def search(self, query: str, k: int, question: str | None = None) -> list[TextHit]:
        raise SearchError("engine down", tool="text")


@pytest.mark.parametrize(
    ("tools", "tool", "query", "error"),
    [
        (SearchBackends(), "image", None, "image search is not available"),  # no image tool
        (SearchBackends(), "text", "q", "text search is not available"),  # no text tool
        (SearchBackends(text=_FailingText()), "text", "q", "engine down"),  # the backend's error
    ],
)
def test_call_tool_records_a_failure_as_a_call(
    tools: SearchBackends, tool: Any, query: str | None, error: str
) -> None:
    hits, call = call_tool(
        tools, tool, image="IMG", query=query, question="?", k=3, failures=ToolFailures(), turn=1
    )
    assert hits == [] and (call.turn, call.tool, call.query, call.n_hits) == (1, tool, query, 0)
    assert call.error == error and call.hits == ()


def test_call_tool_without_a_text_query_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="needs a query"):
        call_tool(
            SearchBackends(),
            "text",
            image=None,
            query=None,
            question="?",
            k=3,
            failures=ToolFailures(),
        )
