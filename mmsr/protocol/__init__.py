"""The search protocol: prompt sets, observation layouts, action parsing, rendering.

No torch here. What a turn *asks for* (``parse_action``) is kept apart from whether it is *well
formed* (``well_formed_kind``, used by the format reward).
"""

from mmsr.protocol.actions import (
    ANSWER_CLOSE,
    ANSWER_OPEN,
    IMAGE_SEARCH_TAG,
    INFORMATION_CLOSE,
    INFORMATION_OPEN,
    REASON_CLOSE,
    REASON_OPEN,
    TEXT_SEARCH_CLOSE,
    TEXT_SEARCH_OPEN,
    contains_search,
    extract_answer,
    parse_action,
    well_formed_kind,
)
from mmsr.protocol.layout import DEFAULT_LAYOUT, ObservationLayout, load_layout
from mmsr.protocol.prompts import (
    IMAGE_PLACEHOLDER,
    PromptSet,
    PromptSetError,
    default_prompt_set,
    load_prompt_set,
)
from mmsr.protocol.render import (
    RenderLimits,
    image_hit_lines,
    neutralize,
    render_first_turn,
    render_image_results,
    render_search_error,
    render_search_outcome,
    render_text_results,
    text_hit_lines,
)

__all__ = [
    "ANSWER_CLOSE",
    "ANSWER_OPEN",
    "DEFAULT_LAYOUT",
    "IMAGE_PLACEHOLDER",
    "IMAGE_SEARCH_TAG",
    "INFORMATION_CLOSE",
    "INFORMATION_OPEN",
    "REASON_CLOSE",
    "REASON_OPEN",
    "TEXT_SEARCH_CLOSE",
    "TEXT_SEARCH_OPEN",
    "ObservationLayout",
    "PromptSet",
    "PromptSetError",
    "RenderLimits",
    "contains_search",
    "default_prompt_set",
    "extract_answer",
    "image_hit_lines",
    "load_layout",
    "load_prompt_set",
    "neutralize",
    "parse_action",
    "render_first_turn",
    "render_image_results",
    "render_search_error",
    "render_search_outcome",
    "render_text_results",
    "text_hit_lines",
    "well_formed_kind",
]
