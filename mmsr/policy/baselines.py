"""Built-in scripted policies (``--policy scripted:NAME``): floors and mechanical baselines.

They read only the conversation, as a model would, and follow whatever the prompt of the
method offers, so every method runs with them (in tests, demos and as sanity baselines):

* ``abstain``: always answers "unknown" — the floor; never searches.
* ``top-title``: answers with the title of the first image hit it has been shown. With no image
  hits in sight it runs the image search when the first turn offers one, else abstains. When
  the last turn asks it for a text query (``rag``), it sends that title as the query. A strong
  baseline for "what is this?" questions, blind to facts.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from mmsr.policy.scripted import Script, ScriptedPolicy
from mmsr.protocol.actions import IMAGE_SEARCH_TAG, INFORMATION_CLOSE
from mmsr.protocol.prompts import IMAGE_PLACEHOLDER
from mmsr.types import Role, Turn

UNKNOWN = "unknown"
_IMAGE_HIT = re.compile(r"^\s*1\. " + re.escape(IMAGE_PLACEHOLDER) + r" (.+)$", re.MULTILINE)


def _reply(reason: str, action: str) -> str:
    return f"<reason>{reason}</reason>{action}"


def _answer(text: str, reason: str) -> str:
    return _reply(reason, f"<answer>{text}</answer>")


def abstain(turns: tuple[Turn, ...]) -> str:
    """Always answers that it does not know."""
    return _answer(UNKNOWN, "I do not know.")


def _top_image_title(turns: tuple[Turn, ...]) -> str | None:
    """The first image hit's title shown in any user turn, if any (rendered results are the
    only lines of the form "1. <image> title")."""
    for turn in turns:
        found = _IMAGE_HIT.search(turn.text) if turn.role is Role.USER else None
        if found:
            return found.group(1).strip()
    return None


def top_title(turns: tuple[Turn, ...]) -> str:
    """See the module docstring."""
    title = _top_image_title(turns)
    last = turns[-1].text
    asked_for_query = "<text_search>" in last.split(INFORMATION_CLOSE)[-1]
    n_assistant = sum(t.role is Role.ASSISTANT for t in turns)
    if title is not None:
        if asked_for_query and n_assistant == 0:
            query = f"<text_search>{title}</text_search>"
            return _reply("I look up what the image search found.", query)
        return _answer(title, "The top image hit names it.")
    if n_assistant == 0 and IMAGE_SEARCH_TAG in turns[0].text:
        return _reply("I cannot tell what the image shows.", IMAGE_SEARCH_TAG)
    return _answer(UNKNOWN, "I found nothing to go on.")


SCRIPTED_POLICIES: dict[str, Callable[[], Script]] = {
    "abstain": lambda: abstain,
    "top-title": lambda: top_title,
}


def scripted_policy(name: str) -> ScriptedPolicy:
    """The built-in scripted policy ``name``; ``ValueError`` naming the known ones."""
    if name not in SCRIPTED_POLICIES:
        raise ValueError(f"unknown scripted policy {name!r}; known: {', '.join(SCRIPTED_POLICIES)}")
    return ScriptedPolicy(SCRIPTED_POLICIES[name]())
