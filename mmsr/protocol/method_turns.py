"""The first user turns of the evaluation methods ``direct`` and ``rag`` (``oracle`` runs one
of the two per question), and of the SFT teacher's one-turn ``oracle`` reading drill.

``direct`` asks for an answer with no tools; ``rag`` and the ``oracle`` drill show the results
of searches already made for the model (rendered here as *sections*) in their first turn. Their
wording is in ``prompts/<method>/`` beside the default prompt set. With ``untagged`` (the
paper's baselines) ``direct`` and ``rag`` ask for the final answer as a short phrase without
tags (``*_untagged.txt``); ``rag``'s query turn keeps its ``<text_search>`` tag. The
evaluation methods and the SFT teacher both render these turns from plain arguments
(question, image, hits), so the warm start sees exactly what the evaluation shows.

Not here: which searches a method makes and when (``mmsr.eval.methods``).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from mmsr.protocol.prompts import (
    IMAGE_PLACEHOLDER,
    QUESTION_SLOT,
    PromptSet,
    default_prompt_set,
    read_prompt_file,
)
from mmsr.protocol.render import RenderLimits, image_hit_lines, neutralize, text_hit_lines
from mmsr.types import ImageHit, Role, TextHit, Turn

METHOD_PROMPT_DIR = Path(__file__).parent / "prompts"
INFORMATION_SLOT = "{information}"
# The error of a prefetched search is cut to this many characters (as the engine's default).
MAX_SECTION_ERROR_CHARS = 300

MethodName = Literal["direct", "rag", "oracle"]


@functools.cache
def method_prompt(method: MethodName, role: str) -> str:
    """The text of ``prompts/<method>/<role>.txt``."""
    return read_prompt_file(METHOD_PROMPT_DIR / method / f"{role}.txt")


def _method_prompts(method: MethodName, **roles: str) -> PromptSet:
    """The default prompt set with some roles replaced by ``prompts/<method>/<role>.txt``."""
    texts = {role: method_prompt(method, name) for role, name in roles.items()}
    base = default_prompt_set()
    return dataclasses.replace(base, name=f"mmsr-{method}", layout=base.layout, **texts)


def method_prompt_set(method: MethodName, untagged: bool = False) -> PromptSet:
    """The prompt set a method's rollouts run with (its follow-up turns); ``untagged``: the
    answer turn of ``direct``/``rag`` asks for an untagged short answer."""
    suffix = "_untagged" if untagged else ""
    if method == "rag":
        return _method_prompts("rag", after_text_search=f"after_text_search{suffix}")
    if method == "direct":
        return _method_prompts("direct", first_turn=f"first_turn{suffix}")
    return default_prompt_set()


def image_section(
    hits: Sequence[ImageHit], limits: RenderLimits = RenderLimits()
) -> tuple[str, list[Any]]:
    """A prefetched image search as a section of the first turn, and its thumbnails."""
    lines, thumbs = image_hit_lines(hits, limits)
    return "Image search results:\n" + "\n".join(lines), thumbs


def text_section(query: str, hits: Sequence[TextHit], limits: RenderLimits = RenderLimits()) -> str:
    """A prefetched text search as a section of the first turn."""
    shown = neutralize(query, limits.max_question_chars)
    return f"Web search results for {shown!r}:\n" + "\n".join(text_hit_lines(hits, limits))


def image_error_section(error: str) -> str:
    """A prefetched image search that failed, as a section of the first turn."""
    return f"The image search failed: {neutralize(error, MAX_SECTION_ERROR_CHARS)}"


def text_error_section(query: str, error: str, limits: RenderLimits = RenderLimits()) -> str:
    """A prefetched text search that failed, as a section of the first turn."""
    shown = neutralize(query, limits.max_question_chars)
    return f"The web search for {shown!r} failed: {neutralize(error, MAX_SECTION_ERROR_CHARS)}"


def prefetched_first_turn(
    method: Literal["rag", "oracle"],
    question: str,
    image: Any,
    sections: Sequence[str],
    thumbnails: Sequence[Any],
    limits: RenderLimits = RenderLimits(),
) -> Turn:
    """The first user turn of ``rag`` / the ``oracle`` drill: the template with the question,
    the question's image and the rendered result sections (``thumbnails`` in their order)."""
    template = method_prompt(method, "first_turn")
    if template.index(IMAGE_PLACEHOLDER) > template.index(INFORMATION_SLOT):
        raise ValueError("the question's image must come before the information in the prompt")
    body = "\n\n".join(sections) or "No searches were needed."
    text = template.replace(INFORMATION_SLOT, body)
    text = text.replace(QUESTION_SLOT, neutralize(question, limits.max_question_chars))
    return Turn(Role.USER, text, (image, *thumbnails))


def direct_first_turn(
    question: str, image: Any, limits: RenderLimits = RenderLimits(), untagged: bool = False
) -> Turn:
    """The first user turn of ``direct``."""
    safe = neutralize(question, limits.max_question_chars)
    template = method_prompt("direct", "first_turn_untagged" if untagged else "first_turn")
    return Turn(Role.USER, template.replace(QUESTION_SLOT, safe), (image,))
