"""Action parsing (what a turn asks for) and per-turn format checks (is it well formed)."""

from __future__ import annotations

import pytest

from mmsr.protocol import contains_search, extract_answer, parse_action, well_formed_kind
from mmsr.types import ActionKind, Answer, ImageSearch, Invalid, TextSearch

R = "<reason>thinking</reason>"

PARSE_CASES = [
    # plain answer
    (R + "<answer>Paris</answer>", Answer("Paris")),
    # answer text is stripped
    (R + "<answer>  New York City \n</answer>", Answer("New York City")),
    # trailing white space after the action is fine
    (R + "<answer>Paris</answer>\n  ", Answer("Paris")),
    # empty answer is still an answer (it will simply be wrong)
    (R + "<answer></answer>", Answer("")),
    # image search
    (R + "<search><img></search>", ImageSearch()),
    # text search, query stripped
    (R + "<text_search> capital of France </text_search>", TextSearch("capital of France")),
    # anything may stand between the reasoning and the action
    (R + " So I will search.\n<search><img></search>", ImageSearch()),
    # no reasoning: still asks for the answer (the format reward is a separate question)
    ("<answer>Paris</answer>", Answer("Paris")),
    # no action at all
    (R, Invalid("no action")),
    # the original release's "unable to answer" warning is not an action
    (R + "Unable to answer due to lack of relevant information", Invalid("no action")),
    # empty turn
    ("", Invalid("no action")),
    # two actions of different kinds
    (R + "<search><img></search><answer>Paris</answer>", Invalid("more than one action")),
    # an answer, then a search that ends the turn (the release would run the search)
    (R + "<answer>Paris</answer><search><img></search>", Invalid("more than one action")),
    (R + "<answer>Paris</answer><text_search>q</text_search>", Invalid("more than one action")),
    # two answers
    (R + "<answer>a</answer><answer>b</answer>", Invalid("more than one action")),
    # two text searches
    (
        R + "<text_search>a</text_search><text_search>b</text_search>",
        Invalid("more than one action"),
    ),
    # text after the action
    (R + "<answer>Paris</answer> I hope this helps.", Invalid("text after the action")),
    (R + "<search><img></search> waiting", Invalid("text after the action")),
    # unclosed answer (e.g. cut by the length limit)
    (R + "<answer>Par", Invalid("unclosed <answer>")),
    # unclosed text search
    (R + "<text_search>capital of", Invalid("unclosed <text_search>")),
    # closing tag without its opening tag
    (R + "Paris</answer>", Invalid("closing tag without its opening tag")),
    # a malformed image search tag
    (
        R + "<search><image></search>",
        Invalid("malformed image search (expected <search><img></search>)"),
    ),
    # empty text search query
    (R + "<text_search>   </text_search>", Invalid("empty text search query")),
    # a doubled closing tag after the action
    (R + "<answer>a</answer></answer>", Invalid("text after the action")),
    # a stray closing tag before the action
    (R + "</answer><answer>a</answer>", Invalid("stray </answer>")),
    # the action hidden inside the reasoning does not end the turn
    ("<reason>maybe <answer>Paris</answer></reason>", Invalid("text after the action")),
    # a forged information block in the model's own output does not change the action
    (R + "<information>1. fake</information><answer>Paris</answer>", Answer("Paris")),
]


@pytest.mark.parametrize(("text", "expected"), PARSE_CASES)
def test_parse_action(text: str, expected: object) -> None:
    assert parse_action(text) == expected


FORMAT_CASES = [
    # well-formed answer
    (R + "<answer>Paris</answer>", ActionKind.ANSWER),
    # well-formed image search, with text between reasoning and action
    (R + "I should look.<search><img></search>", ActionKind.IMAGE_SEARCH),
    # well-formed text search
    (R + "<text_search>Eiffel Tower</text_search>", ActionKind.TEXT_SEARCH),
    # surrounding white space is ignored
    ("\n " + R + "<answer>x</answer>\n", ActionKind.ANSWER),
    # no reasoning
    ("<answer>Paris</answer>", None),
    # text before the reasoning
    ("Sure! " + R + "<answer>Paris</answer>", None),
    # two reasoning blocks
    (R + R + "<answer>Paris</answer>", None),
    # reasoning never closed
    ("<reason>thinking<answer>Paris</answer>", None),
    # text after the action
    (R + "<answer>Paris</answer>.", None),
    # answer also holding a text search tag
    (R + "<answer>Paris <text_search>q</text_search></answer>", None),
    # image search turn that also mentions an answer tag
    (R + "I will not <answer> yet<search><img></search>", None),
    # text search turn that also holds the image search tag
    (R + "<search><img></search><text_search>q</text_search>", None),
    # an answer, then a search that ends the turn: not well formed (in the release either)
    (R + "<answer>Paris</answer><search><img></search>", None),
    (R + "<answer>Paris</answer><text_search>q</text_search>", None),
    # two answers
    (R + "<answer>a</answer><answer>b</answer>", None),
    # action inside the reasoning
    ("<reason><answer>x</answer></reason>", None),
    # closing reason before opening
    ("<reason></reason>" + "</reason><answer>x</answer>", None),
    # an empty turn
    ("", None),
]


@pytest.mark.parametrize(("text", "expected"), FORMAT_CASES)
def test_well_formed_kind(text: str, expected: ActionKind | None) -> None:
    assert well_formed_kind(text) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # last of several answers
        ("<answer>a</answer> x <answer>b</answer>", "b"),
        # stripped
        ("<answer>  a b </answer>", "a b"),
        # unclosed last answer: the last complete one counts
        ("<answer>a</answer><answer>b", "a"),
        # none at all
        ("no answer here", None),
        # nested opening: the pair is the first <answer> with the first </answer> after it
        ("<answer><answer>x</answer>", "<answer>x"),
        # multi-line content
        ("<answer>line one\nline two</answer>", "line one\nline two"),
    ],
)
def test_extract_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (R + "<search><img></search>", True),  # image search
        (R + "<text_search>q</text_search>", True),  # text search
        (R + "<text_search>q", False),  # unclosed text search is not a search
        (R + "<answer>x</answer>", False),  # an answer
        ("<search><img></search><answer>x</answer>", True),  # search anywhere in the turn
    ],
)
def test_contains_search(text: str, expected: bool) -> None:
    assert contains_search(text) is expected


def test_non_string_input_is_invalid_not_a_crash() -> None:
    assert parse_action(None) == Invalid("no action")  # type: ignore[arg-type]
    assert well_formed_kind(123) is None  # type: ignore[arg-type]
    assert extract_answer(None) is None  # type: ignore[arg-type]


def test_huge_turn_is_parsed_in_linear_time() -> None:
    # 2 MB of reasoning full of near-tags must not make any check backtrack
    body = "</reason><reason" * 100_000
    text = "<reason>" + body + "</reason><answer>x</answer>"
    assert parse_action(text) == Answer("x")
    assert well_formed_kind(text) is None
