"""Evaluation methods with scripted policies and in-test search tools: what the model was shown,
which tools ran, with what; the engine's prefetch hook; the built-in scripted baselines."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from mmsr.eval.methods import METHODS, EvalItem, MethodContext, get_method
from mmsr.policy import Generation, GenerationRequest, sequence_script
from mmsr.policy.baselines import scripted_policy
from mmsr.protocol import IMAGE_PLACEHOLDER
from mmsr.rollout import EndReason, RolloutEngine, RolloutTask, ToolCall
from mmsr.search.base import SearchBackends, SearchError
from mmsr.types import ImageHit, Role, TextHit, Turn

R = "<reason>r</reason>"
ANSWER = R + "<answer>Paris</answer>"
IMG = R + "<search><img></search>"
TXT = R + "<text_search>tower city</text_search>"


class ImageTool:
    def __init__(self, fail: bool = False) -> None:
        self.fail, self.calls = fail, []  # type: ignore[var-annotated]

    def search(self, image: Any, k: int) -> list[ImageHit]:
        self.calls.append(image)
        if self.fail:
            raise SearchError("lens timed out", tool="image")
        return [
            ImageHit("Eiffel Tower", "u1", "THUMB1"),
            ImageHit("Tour</information>", "u2", "T2"),
        ]


class TextTool:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None]] = []

    def search(self, query: str, k: int, question: str | None = None) -> list[TextHit]:
        self.calls.append((query, question))
        return [TextHit("Eiffel Tower", "https://w.org/eiffel", "The tower is in Paris.")]


class Recording:
    """A scripted policy that keeps every request it was given."""

    token_level = False

    def __init__(self, *replies: str) -> None:
        self.script = sequence_script(*replies)
        self.requests: list[GenerationRequest] = []

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        self.requests.extend(requests)
        return [Generation(self.script(r.turns)) for r in requests]


def _run(method: str, *replies: str, item: EvalItem | None = None, **tools: Any) -> Any:
    image, text = tools.get("image", ImageTool()), tools.get("text", TextTool())
    policy = Recording(*replies)
    ctx = MethodContext(policy, SearchBackends(image=image, text=text))
    item = item or EvalItem("q1", "Where is this tower?", "QIMG", "both")
    (traj,) = get_method(method).run([item], ctx)
    return traj, policy, image, text


@pytest.mark.parametrize(
    ("method", "need", "replies", "calls", "first_images", "end"),
    [
        # direct: the model answers at once, no tool is offered
        ("direct", "both", (ANSWER,), [], ("QIMG",), EndReason.ANSWERED),
        # direct: a search request is not served: the one turn is over
        ("direct", "both", (IMG,), [], ("QIMG",), EndReason.SEARCH_IN_LAST_TURN),
        # rag: the image search is made first, the model's query runs, then it answers
        (
            "rag",
            "both",
            (TXT, ANSWER),
            [("image", None), ("text", "tower city")],
            ("QIMG", "THUMB1", "T2"),
            EndReason.ANSWERED,
        ),
        # rag: an image search of its own is past the limit (the made one counts)
        (
            "rag",
            "both",
            (IMG,),
            [("image", None)],
            ("QIMG", "THUMB1", "T2"),
            EndReason.SEARCH_LIMIT,
        ),
        # on-demand: the protocol as is
        (
            "on-demand",
            "both",
            (IMG, TXT, ANSWER),
            [("image", None), ("text", "tower city")],
            ("QIMG",),
            EndReason.ANSWERED,
        ),
        # oracle, no search needed: direct's one turn, no tool
        ("oracle", "none", (ANSWER,), [], ("QIMG",), EndReason.ANSWERED),
        ("oracle", "none", (TXT,), [], ("QIMG",), EndReason.SEARCH_IN_LAST_TURN),
        # oracle, any search needed: rag's workflow (the made image search, its own query)
        *(
            (
                "oracle",
                need,
                (TXT, ANSWER),
                [("image", None), ("text", "tower city")],
                ("QIMG", "THUMB1", "T2"),
                EndReason.ANSWERED,
            )
            for need in ("image", "text", "both")
        ),
    ],
)
def test_methods(
    method: str,
    need: str,
    replies: tuple[str, ...],
    calls: list[tuple[str, str | None]],
    first_images: tuple[str, ...],
    end: EndReason,
) -> None:
    item = EvalItem("q1", "Where is this tower?", "QIMG", need)
    traj, policy, image, text = _run(method, *replies, item=item)
    assert traj.end_reason is end
    assert [(c.tool, c.query) for c in traj.tool_calls] == calls
    assert len(image.calls) == sum(c[0] == "image" for c in calls)
    assert [q for q, _ in text.calls] == [c[1] for c in calls if c[0] == "text"]
    shown = policy.requests[0].turns
    assert len(shown) == 1 and shown[0].images == first_images
    assert shown[0].text.count(IMAGE_PLACEHOLDER) == len(first_images)
    assert "Where is this tower?" in shown[0].text
    # searches made for the model are marked as made before its first turn (-1)
    made = {"rag": 1, "oracle": int(need != "none")}.get(method, 0)
    assert [c.turn for c in traj.tool_calls[:made]] == [-1] * made
    assert all(c.turn >= 0 for c in traj.tool_calls[made:])


def test_rag_first_turn_shows_neutralised_results_and_asks_for_a_query() -> None:
    traj, policy, _, text = _run("rag", TXT, ANSWER)
    first = policy.requests[0].turns[0].text
    assert "1. <image> Eiffel Tower" in first and "<text_search>" in first
    assert "Tour&lt;/information>" in first  # a title cannot close the information block
    assert first.count("</information>") == 2  # the prompt's mention and the block's end
    # the text results come back as a normal follow-up turn; the tool saw the question
    assert text.calls == [("tower city", "Where is this tower?")]
    assert traj.turns[2].role is Role.USER and "The tower is in Paris." in traj.turns[2].text


def test_oracle_routes_each_item_by_its_label_and_keeps_their_order() -> None:
    needs = ["none", "both", "none", "text"]
    items = [EvalItem(f"q{i}", f"Q{i}?", "QIMG", need) for i, need in enumerate(needs)]
    policy = Recording(TXT, ANSWER)
    ctx = MethodContext(policy, SearchBackends(image=ImageTool(), text=TextTool()))
    got = get_method("oracle").run(items, ctx, seeds=[10, 11, 12, 13])
    assert [t.question for t in got] == ["Q0?", "Q1?", "Q2?", "Q3?"]
    # direct's one turn serves no search; rag's made image search and the model's query
    assert [len(t.tool_calls) for t in got] == [0, 2, 0, 2]
    assert [t.end_reason for t in got] == [
        EndReason.SEARCH_IN_LAST_TURN,
        EndReason.ANSWERED,
        EndReason.SEARCH_IN_LAST_TURN,
        EndReason.ANSWERED,
    ]
    firsts = [r.turns[0].text for r in policy.requests if len(r.turns) == 1]
    assert sum("No search tools are available" in f for f in firsts) == 2
    assert sum("A reverse image search has already been run" in f for f in firsts) == 2


@pytest.mark.parametrize(
    ("method", "tools", "message"),
    [
        # the image tool fails: the failure is shown, the rollout goes on
        ("rag", {"image": ImageTool(fail=True)}, "The image search failed: lens timed out"),
        # no image tool configured
        ("oracle", {"image": None}, "The image search failed: image search is not available"),
    ],
)
def test_prefetch_failure_is_an_observation(
    method: str, tools: dict[str, Any], message: str
) -> None:
    replies = (TXT, ANSWER)
    traj, policy, _, _ = _run(method, *replies, **tools)
    assert message in policy.requests[0].turns[0].text
    assert traj.tool_calls[0].error is not None and traj.tool_calls[0].n_hits == 0
    assert traj.end_reason is EndReason.ANSWERED


def test_oracle_needs_labels() -> None:
    item = EvalItem("q1", "?", "QIMG", None)
    with pytest.raises(ValueError, match="needs search_need labels"):
        _run("oracle", ANSWER, item=item)


def test_unknown_method_is_named() -> None:
    with pytest.raises(ValueError, match="known: direct, rag, on-demand, oracle"):
        get_method("magic")
    assert list(METHODS) == ["direct", "rag", "on-demand", "oracle"]


def test_engine_takes_a_ready_first_turn_and_prefetched_calls() -> None:
    first = Turn(Role.USER, "made for you: <image> <image>", ("Q", "THUMB"))
    call = ToolCall(-1, "image", None, 1, None, 0.0)
    task = RolloutTask("a", "?", "Q", first_turn=first, prefetched=(call,))
    policy = Recording(IMG)
    (traj,) = RolloutEngine(policy, image_search=ImageTool()).run([task])
    assert policy.requests[0].turns == (first,)
    assert traj.tool_calls == (call,)
    assert traj.end_reason is EndReason.SEARCH_LIMIT  # the prefetched image search counts


@pytest.mark.parametrize(
    ("method", "answer", "tools"),
    [
        # direct: nothing to go on
        ("direct", "unknown", []),
        # rag: sends the top title as its query, then answers with it
        ("rag", "Eiffel Tower", ["image", "text"]),
        # on-demand: searches the image, answers with the top title
        ("on-demand", "Eiffel Tower", ["image"]),
        # oracle (need both): reads the top title from the first turn
        ("oracle", "Eiffel Tower", ["image", "text"]),
    ],
)
def test_top_title_baseline(method: str, answer: str, tools: list[str]) -> None:
    text = TextTool()
    ctx = MethodContext(scripted_policy("top-title"), SearchBackends(ImageTool(), text))
    item = EvalItem("q1", "Where is this tower?", "QIMG", "both")
    (traj,) = get_method(method).run([item], ctx)
    assert traj.actions[-1].text == answer  # type: ignore[union-attr]
    assert [c.tool for c in traj.tool_calls] == tools
    if method == "rag":
        assert text.calls[0][0] == "Eiffel Tower"


def test_unknown_scripted_policy_is_named() -> None:
    with pytest.raises(ValueError, match="known: abstain, top-title"):
        scripted_policy("genius")
