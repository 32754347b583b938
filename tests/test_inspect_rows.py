"""The inspector's pure parts: rows of odd lines, filters, counts, the comparison of runs,
GRPO groups, and the trajectory view's pieces and thumbnails."""

from __future__ import annotations

from typing import Any

import pytest

from mmsr.inspect import inspect_command, inspector_link
from mmsr.inspect.rows import Filters, bad_row, compare, counts, groups, summarize
from mmsr.inspect.views import assistant_pieces, trajectory_view, user_pieces


def line(
    id_: str, *, acc: float | None = 1.0, tools: tuple[str, ...] = (), **extra: Any
) -> dict[str, Any]:
    record: dict[str, Any] = {"id": id_, "question": f"question {id_}", "end_reason": "answered"}
    record["tool_calls"] = [{"tool": t, "error": None} for t in tools]
    if acc is not None:
        record["reward"] = {"score": 0.9 * acc + 0.1, "accuracy": acc, "answer": f"ans {id_}"}
    return record | extra


def test_odd_fields_are_none_never_an_error() -> None:
    row = summarize(
        {"id": 7, "question": ["not", "text"], "reward": "high", "tool_calls": {}, "group": True}, 3
    )
    assert row["id"] == "7" and row["question"] == "" and row["reward"] is None
    assert row["correct"] is None and row["searched"] is False and row["group"] is None
    assert summarize({}, 5)["id"] == "line 5"
    # a judge's verdict wins over the reward's exact match
    assert summarize(line("a", acc=0.0, judge=True), 1)["correct"] is True


ROWS = [
    summarize(line("a", tools=("image",), category="search_required", need="image"), 1),
    summarize(line("b", acc=0.0, tools=("image", "text"), category="search_required"), 2),
    summarize(line("c", category="search_free", need="none"), 3),
    summarize(line("d", acc=None, end_reason="truncated"), 4),
    bad_row(5, "not JSON", '{"id": "e", "quest'),
]


@pytest.mark.parametrize(
    ("filters", "ids"),
    [
        (Filters(), ["a", "b", "c", "d", "line 5"]),  # no filter: every line, bad ones too
        (Filters(correct=True), ["a", "c"]),
        (Filters(correct=False), ["b"]),  # unscored lines are neither
        (Filters(searched=False), ["c", "d", "line 5"]),
        (Filters(tools="both"), ["b"]),
        (Filters(tools="image"), ["a"]),
        (Filters(category="search_required"), ["a", "b"]),
        (Filters(category=""), ["d", "line 5"]),  # "" is "no category"
        (Filters(need="none"), ["c"]),  # "none" is a label, not "no label"
        (Filters(end_reason="truncated"), ["d"]),
        (Filters(reward_min=0.5), ["a", "c"]),  # lines without a reward never match a range
        (Filters(reward_max=0.5), ["b"]),
        (Filters(text="QUESTION B"), ["b"]),  # case-insensitive, in the question
        (Filters(text="ans c"), ["c"]),  # ... or the answer
        (Filters(text="quest"), ["a", "b", "c", "d", "line 5"]),  # ... or a bad line's text
        (Filters(bad=True), ["line 5"]),
        (Filters(correct=True, tools="none"), ["c"]),  # conditions combine
    ],
)
def test_filters(filters: Filters, ids: list[str]) -> None:
    assert [r["id"] for r in ROWS if filters.match(r)] == ids


def test_counts() -> None:
    c = counts(ROWS)
    assert (c["n"], c["correct"], c["wrong"], c["unscored"], c["searched"], c["bad"]) == (
        5,
        2,
        1,
        2,
        2,
        1,
    )
    assert c["tools"] == {"none": 3, "image": 1, "text": 0, "both": 1}
    assert c["mean_reward"] == pytest.approx((1.0 + 0.1 + 1.0) / 3)


def test_compare_finds_the_questions_where_runs_disagree() -> None:
    first = [summarize(line(i, acc=1.0), n) for n, i in enumerate("abc", 1)]
    second = [
        summarize(line(i, acc=float(i != "b"), tools=("image",) if i == "c" else ()), n)
        for n, i in enumerate("bcd", 1)
    ]
    result = compare([first, second], "correct")
    assert result["n_common"] == 2 and result["only_in"] == [1, 1]
    assert [item["id"] for item in result["items"]] == ["b"]
    assert result["patterns"] == {"✓✗": 1, "✓✓": 1}
    assert [item["id"] for item in compare([first, second], "searched")["items"]] == ["c"]
    assert len(compare([first, second], "all")["items"]) == 2


def test_groups_by_prompt_with_reward_spread() -> None:
    samples = [
        summarize(line("q1", acc=1.0, group=0, advantage=0.7), 1),
        summarize(line("q1", acc=0.0, group=0, advantage=-0.7), 2),
        summarize(line("q2", acc=1.0, group=1), 3),
        summarize(line("q2", acc=1.0, group=1), 4),
        bad_row(5, "not JSON", "x"),
    ]
    out = groups(samples)
    assert [(g["key"], g["n"], g["correct"]) for g in out] == [("group 0", 2, 1), ("group 1", 2, 2)]
    assert out[0]["std_reward"] > 0 and out[1]["std_reward"] == 0  # no signal in group 1
    # ``mmsr rollout --n`` copies (id#k) group by their id
    copies = [summarize(line(f"q#{k}"), k) for k in range(3)]
    assert [g["n"] for g in groups(copies)] == [3]


def test_user_turns_put_each_image_where_its_placeholder_was() -> None:
    pieces = user_pieces("Image: <image>\n1. <image> Owl", ["q.png", None, "extra.png"])
    assert [(p["kind"], p.get("text", p.get("image"))) for p in pieces] == [
        ("text", "Image: "),
        ("image", "q.png"),
        ("text", "\n1. "),
        ("image", None),  # not saved
        ("text", " Owl"),
        ("image", "extra.png"),  # more images than placeholders: shown at the end
    ]


def test_assistant_turns_mark_the_action() -> None:
    pieces = assistant_pieces("<reason>hm</reason>\n<text_search>owl <b></text_search> trailing")
    assert [p["kind"] for p in pieces] == ["reason", "text", "action", "text"]
    assert pieces[2]["text"] == "<text_search>owl <b></text_search>"
    assert (
        "".join(p["text"] for p in pieces)
        == "<reason>hm</reason>\n<text_search>owl <b></text_search> trailing"
    )


def test_image_hits_get_their_thumbnails_from_the_observation() -> None:
    record = {
        "turns": [
            {"role": "user", "text": "<image> q", "n_images": 1},
            {"role": "assistant", "text": "<search><img></search>"},
            {"role": "user", "text": "1. <image> A\n2. B\n3. <image> C", "n_images": 2},
            {"role": "assistant", "text": "<answer>A</answer>"},
        ],
        "images": ["q.png", "a.png", "c.png"],
        "tool_calls": [
            {
                "turn": 0,
                "tool": "image",
                "hits": [
                    {"title": "A", "thumbnail": True},
                    {"title": "B", "thumbnail": False},
                    {"title": "C", "thumbnail": True},
                ],
            },
        ],
    }
    view = trajectory_view(record, 1)
    assert view["question_image"] == "q.png"
    assert [h["thumbnail"] for h in view["tool_calls"][0]["hits"]] == ["a.png", None, "c.png"]
    assert view["tool_calls"][0]["observation"] == 2
    # a call made before the first turn (rag) shows its thumbnails after the question's image
    record["turns"][0] = {"role": "user", "text": "<image> q <image> A <image> C", "n_images": 3}
    record["turns"][2]["n_images"] = 0
    record["tool_calls"][0]["turn"] = -1
    hits = trajectory_view(record, 1)["tool_calls"][0]["hits"]
    assert [h["thumbnail"] for h in hits] == ["a.png", None, "c.png"]


def test_commands_and_links() -> None:
    assert inspect_command(["a", "b c"], port=9000) == "mmsr inspect a 'b c' --port 9000"
    assert inspector_link(["/x/a", "/x/b"], port=9000).endswith(
        ":9000/#/open?path=%2Fx%2Fa&path=%2Fx%2Fb"
    )
