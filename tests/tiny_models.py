"""Shared builders for the model tests: a small trained tokenizer, images, conversations.

Everything is built in-process from text and configs, and cached per test session: training
the tokenizer takes milliseconds, a micro model well under a second.
"""

from __future__ import annotations

import functools
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a guard: nothing here may reach a hub

from PIL import Image
from transformers import PreTrainedTokenizerFast

from mmsr.models import PRESETS, ImageProcessor, train_tokenizer
from mmsr.protocol import default_prompt_set, render_first_turn
from mmsr.types import Role, Turn

ENTITIES = ("Paris", "France", "São Tomé", "New York", "Côte d'Ivoire", "Zorblax", "R2-D2")

_CORPUS = (
    "<reason>The flag is the flag of France, whose capital is Paris.</reason>"
    "<answer>Paris</answer>",
    "<reason>I cannot tell what this shows.</reason><search><img></search>",
    "<reason>It is Zorblax; I need its capital.</reason>"
    "<text_search>capital of Zorblax</text_search>",
    "<information>1. São Tomé - capital city. 2. New York - a city in the United States."
    "</information>",
    "What is the capital of the country whose flag is shown? Côte d'Ivoire and R2-D2 too.",
    "The quick brown fox jumps over the lazy dog 0123456789 times.",
)


def corpus() -> list[str]:
    """Training text: the protocol's prompts plus a few protocol-shaped turns."""
    prompts = default_prompt_set()
    texts = [prompts.first_turn, prompts.after_image_search, prompts.after_text_search]
    return [*texts, prompts.search_failed, *(_CORPUS * 20)]


@functools.cache
def tokenizer() -> PreTrainedTokenizerFast:
    """A 700-token BPE plus the atomic ENTITIES (do not mutate: it is shared)."""
    return train_tokenizer(corpus(), vocab_size=700, atomic_tokens=ENTITIES)


def image_processor(preset: str = "tiny") -> ImageProcessor:
    return ImageProcessor(PRESETS[preset].image_processor_config())


def image(
    color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (90, 70)
) -> Image.Image:
    return Image.new("RGB", size, color)


def conversation() -> list[Turn]:
    """A two-round conversation: question with image, image search, results with thumbnails."""
    first = render_first_turn("Which country's flag is this?", image(), default_prompt_set())
    return [
        first,
        Turn(Role.ASSISTANT, "<reason>Not sure.</reason><search><img></search>"),
        Turn(
            Role.USER,
            "<information>1. <image> Paris\n2. <image> São Tomé</information>\nAnswer now.",
            (image((0, 0, 255)), image((0, 255, 0), (30, 200))),
        ),
        Turn(Role.ASSISTANT, "<reason>It is France.</reason><answer>France</answer>"),
    ]
