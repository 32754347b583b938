"""Action syntax of the search protocol: parsing and per-turn format checks.

Two separate questions are answered here:

* ``parse_action(text)`` — what did the model *ask for*? Lenient about reasoning (a turn
  without ``<reason>`` that ends in an answer still asks for that answer) but strict about the
  action itself: exactly one action, and it must end the turn.
* ``well_formed_kind(text)`` — is the turn *well formed* for the format reward? Strict: the
  turn starts with the only ``<reason>…</reason>``, then exactly one action ends it, and no
  other action tag appears. This matches the original release's format check on every input.

Pure string code; no regular expression here can backtrack badly on long or hostile text.
"""

from __future__ import annotations

from mmsr.types import Action, ActionKind, Answer, ImageSearch, Invalid, TextSearch

REASON_OPEN, REASON_CLOSE = "<reason>", "</reason>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
TEXT_SEARCH_OPEN, TEXT_SEARCH_CLOSE = "<text_search>", "</text_search>"
IMAGE_SEARCH_TAG = "<search><img></search>"
INFORMATION_OPEN, INFORMATION_CLOSE = "<information>", "</information>"


def _as_text(text: object) -> str:
    return text if isinstance(text, str) else ""


def parse_action(text: str) -> Action:
    """Return the one action an assistant turn asks for, or ``Invalid`` with the reason.

    >>> parse_action("<reason>It is a flag.</reason><answer>France</answer>")
    Answer(text='France', kind=<ActionKind.ANSWER: 'answer'>)
    >>> parse_action("<reason>?</reason><answer>a</answer> done").reason
    'text after the action'
    """
    text = _as_text(text).rstrip()
    n_answer = text.count(ANSWER_OPEN)
    n_text = text.count(TEXT_SEARCH_OPEN)
    n_image = text.count(IMAGE_SEARCH_TAG)
    n_actions = n_answer + n_text + n_image
    if n_actions == 0:
        if ANSWER_CLOSE in text or TEXT_SEARCH_CLOSE in text:
            return Invalid("closing tag without its opening tag")
        if "<search>" in text:
            return Invalid(f"malformed image search (expected {IMAGE_SEARCH_TAG})")
        return Invalid("no action")
    if n_actions > 1:
        return Invalid("more than one action")
    if n_image:
        if not text.endswith(IMAGE_SEARCH_TAG):
            return Invalid("text after the action")
        return ImageSearch()
    opening, closing = (
        (ANSWER_OPEN, ANSWER_CLOSE) if n_answer else (TEXT_SEARCH_OPEN, TEXT_SEARCH_CLOSE)
    )
    start = text.index(opening) + len(opening)
    end = text.find(closing, start)
    if end < 0:
        return Invalid(f"unclosed {opening}")
    if end + len(closing) != len(text):
        return Invalid("text after the action")
    if text.count(closing) != 1:
        return Invalid(f"stray {closing}")
    inner = text[start:end].strip()
    if n_answer:
        return Answer(inner)
    if not inner:
        return Invalid("empty text search query")
    return TextSearch(inner)


def contains_search(text: str) -> bool:
    """Whether a turn contains a search action anywhere (this is what the search penalty counts)."""
    text = _as_text(text)
    return IMAGE_SEARCH_TAG in text or (TEXT_SEARCH_OPEN in text and TEXT_SEARCH_CLOSE in text)


def extract_answer(text: str) -> str | None:
    """Text of the last ``<answer>…</answer>`` in ``text`` (stripped), or ``None``.

    Pairs each ``<answer>`` with the first ``</answer>`` after it, scanning left to right, and
    keeps the last pair; so ``<answer>a</answer><answer>b</answer>`` gives ``"b"``.
    """
    text = _as_text(text)
    last: str | None = None
    pos = 0
    while True:
        start = text.find(ANSWER_OPEN, pos)
        if start < 0:
            return last
        end = text.find(ANSWER_CLOSE, start + len(ANSWER_OPEN))
        if end < 0:
            return last
        last = text[start + len(ANSWER_OPEN) : end].strip()
        pos = end + len(ANSWER_CLOSE)


# For each well-formed kind: the tag that must end the turn, the opening tag of the action
# (counted once; ``None`` for the image search, which is one fixed tag) and what must be absent.
_FORMS: dict[ActionKind, tuple[str, str, str, tuple[str, ...]]] = {
    ActionKind.ANSWER: (
        ANSWER_OPEN,
        ANSWER_CLOSE,
        ANSWER_CLOSE,
        (IMAGE_SEARCH_TAG, TEXT_SEARCH_OPEN, TEXT_SEARCH_CLOSE),
    ),
    ActionKind.IMAGE_SEARCH: (
        IMAGE_SEARCH_TAG,
        "",
        IMAGE_SEARCH_TAG,
        (ANSWER_OPEN, ANSWER_CLOSE, TEXT_SEARCH_OPEN, TEXT_SEARCH_CLOSE),
    ),
    ActionKind.TEXT_SEARCH: (
        TEXT_SEARCH_OPEN,
        TEXT_SEARCH_CLOSE,
        TEXT_SEARCH_CLOSE,
        (ANSWER_OPEN, ANSWER_CLOSE, IMAGE_SEARCH_TAG),
    ),
}


def _is_well_formed(text: str, kind: ActionKind) -> bool:
    opening, closing, last, forbidden = _FORMS[kind]
    if not (text.startswith(REASON_OPEN) and text.endswith(last)):
        return False
    if text.count(REASON_OPEN) != 1 or text.count(REASON_CLOSE) != 1:
        return False
    if text.count(opening) != 1 or (closing and text.count(closing) != 1):
        return False
    if any(tag in text for tag in forbidden):
        return False
    # Order: <reason> … </reason> … opening … closing(at the end).
    reason_end = text.index(REASON_CLOSE)
    action_start = text.index(opening)
    if reason_end < len(REASON_OPEN) or action_start < reason_end + len(REASON_CLOSE):
        return False
    return not closing or text.rindex(closing) >= action_start + len(opening)


def well_formed_kind(text: str) -> ActionKind | None:
    """The action kind for which ``text`` is a well-formed turn, or ``None``.

    Well formed: after stripping white space, the turn starts with ``<reason>``, has exactly
    one ``<reason>…</reason>``, then exactly one action that ends the turn, and no tag of
    another action. Anything may stand between ``</reason>`` and the action.
    """
    text = _as_text(text).strip()
    for kind in _FORMS:
        if _is_well_formed(text, kind):
            return kind
    return None
