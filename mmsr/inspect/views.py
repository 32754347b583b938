"""What the trajectory page shows of one line: each turn cut into text, image and action
pieces, each tool call with the thumbnails of its hits, the reward and the labels.

Pure functions over the JSON object of one line, read as defensively as ``rows`` reads it.
The pieces are plain strings; the page puts them in as text (never as HTML), so model output
and web text cannot inject markup.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from mmsr.inspect.rows import as_dicts, as_int, as_number, as_str, as_strings, summarize

IMAGE_PLACEHOLDER = "<image>"
# The protocol's tags: reasoning and the three actions. A block runs from its
# opening tag to the first closing one after it (group 1 names the tag to close).
_OPENING = re.compile(r"<(reason|answer|text_search)>|<search><img></search>")
# Fields shown as they are, beside the ones the view builds.
_PLAIN = ("method", "judge", "judge_error", "step", "group", "advantage", "n_tokens")


def user_pieces(text: str, images: Sequence[str | None]) -> list[dict[str, Any]]:
    """A user turn as the model saw it: its text with each ``<image>`` placeholder replaced
    by the image it stood for (``None``: not saved); images left over go at the end."""
    pieces: list[dict[str, Any]] = []
    parts = text.split(IMAGE_PLACEHOLDER)
    for i, part in enumerate(parts):
        if part:
            pieces.append({"kind": "text", "text": part})
        if i < len(parts) - 1:
            pieces.append({"kind": "image", "image": images[i] if i < len(images) else None})
    pieces += [{"kind": "image", "image": name} for name in images[len(parts) - 1 :]]
    return pieces


def _blocks(text: str) -> Iterator[tuple[int, int, str]]:
    """The (start, end, kind) of each reason block and action of ``text``, in order."""
    # closing tags not found after some point, hence after no later one either: remembering
    # them keeps this linear (a regex ``<reason>.*?</reason>`` searches the rest of the
    # text again at every unclosed opening, quadratic on a text of repeated tags)
    unclosed: set[str] = set()
    opening = _OPENING.search(text)
    while opening is not None:
        tag, end = opening.group(1), opening.end()
        if tag is not None:
            close = f"</{tag}>"
            found = -1 if close in unclosed else text.find(close, end)
            if found < 0:
                unclosed.add(close)
                opening = _OPENING.search(text, end)
                continue
            end = found + len(close)
        yield opening.start(), end, "reason" if tag == "reason" else "action"
        opening = _OPENING.search(text, end)


def assistant_pieces(text: str) -> list[dict[str, Any]]:
    """An assistant turn cut into plain text, ``<reason>`` blocks and actions (highlighted).

    >>> [p["kind"] for p in assistant_pieces("<reason>r</reason> <answer>x</answer>")]
    ['reason', 'text', 'action']
    """
    pieces: list[dict[str, Any]] = []
    at = 0
    for start, end, kind in _blocks(text):
        if start > at:
            pieces.append({"kind": "text", "text": text[at:start]})
        pieces.append({"kind": kind, "text": text[start:end]})
        at = end
    if at < len(text):
        pieces.append({"kind": "text", "text": text[at:]})
    return pieces


def turn_images(
    turns: Sequence[Mapping[str, Any]], images: Sequence[Any]
) -> list[list[str | None]]:
    """Each turn's own image names: ``images`` cut by the turns' ``n_images``."""
    out, at = [], 0
    for turn in turns:
        n = max(0, as_int(turn.get("n_images")) or 0)
        out.append([name if isinstance(name, str) else None for name in images[at : at + n]])
        at += n
    return out


def _observation(turns: Sequence[Mapping[str, Any]], call_turn: int) -> int | None:
    """The index (in ``turns``) of the user turn that showed a call's results: the one after
    the call's assistant turn, or the first turn for a call made before the first turn (-1)."""
    if call_turn < 0:
        return 0 if turns else None
    seen = -1
    for i, turn in enumerate(turns):
        if turn.get("role") == "assistant":
            seen += 1
            if seen == call_turn:
                following = i + 1
                return following if following < len(turns) else None
    return None


def tool_call_view(
    call: Mapping[str, Any],
    turns: Sequence[Mapping[str, Any]],
    images: Sequence[Sequence[str | None]],
) -> dict[str, Any]:
    """A tool call with its hits; an image hit that had a thumbnail gets the thumbnail's
    name, taken in hit order from the images of the turn that showed the results."""
    turn = as_int(call.get("turn"))
    hits = [
        {
            "title": as_str(h.get("title")) or "",
            "url": as_str(h.get("url")) or "",
            "summary": as_str(h.get("summary")),
            "thumbnail": None,
        }
        for h in as_dicts(call.get("hits"))
    ]
    where = _observation(turns, turn) if turn is not None else None
    if call.get("tool") == "image" and where is not None and call.get("error") is None:
        shown = list(images[where])
        # the first turn starts with the question's own image
        thumbnails = iter(shown[1:] if where == 0 else shown)
        raw = as_dicts(call.get("hits"))
        for hit, record in zip(hits, raw, strict=True):
            if record.get("thumbnail") is True:
                hit["thumbnail"] = next(thumbnails, None)
    return {
        "turn": turn,
        "tool": as_str(call.get("tool")) or "?",
        "query": as_str(call.get("query")),
        "latency_s": as_number(call.get("latency_s")),
        "error": as_str(call.get("error")),
        "n_hits": as_int(call.get("n_hits")),
        "hits": hits,
        "observation": where,
    }


def trajectory_view(record: Mapping[str, Any], line: int) -> dict[str, Any]:
    """Everything the trajectory page shows of the JSON object on line ``line``."""
    turns = as_dicts(record.get("turns"))
    raw_images = record.get("images")
    images = turn_images(turns, raw_images if isinstance(raw_images, list) else [])
    shown = []
    for turn, own in zip(turns, images, strict=True):
        role = as_str(turn.get("role")) or "?"
        text = as_str(turn.get("text")) or ""
        pieces = assistant_pieces(text) if role == "assistant" else user_pieces(text, own)
        shown.append({"role": role, "pieces": pieces})
    reward = record.get("reward")
    return {
        "row": summarize(record, line),
        "question_image": images[0][0] if images and images[0] else None,
        "turns": shown,
        "tool_calls": [
            tool_call_view(c, turns, images) for c in as_dicts(record.get("tool_calls"))
        ],
        "reward": reward if isinstance(reward, dict) else None,
        "golds": as_strings(record.get("golds")),
        "labels": {"category": record.get("category"), "need": record.get("need")},
        **{key: record.get(key) for key in _PLAIN if key in record},
    }
