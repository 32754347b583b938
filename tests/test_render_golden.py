"""The default observations are pinned byte for byte (a committed warm start was trained on them).

A seeded corpus of hit lists — empty lists, hits without thumbnails, hostile and long titles,
urls and summaries, many hits — and failed searches of both tools, rendered with the default
prompt set; the SHA-256 of everything rendered must not move. ``GOLDEN`` was computed on the
renderer as it was before observation layouts became part of the prompt set.
"""

from __future__ import annotations

import hashlib
import random

from mmsr.protocol import (
    default_prompt_set,
    render_image_results,
    render_search_error,
    render_text_results,
)
from mmsr.types import ImageHit, TextHit, Turn

GOLDEN = "1943d153b9d963976a39f8be780aab04cf2f37e0cfc4482f571a54679a8aadd6"
_WORDS = [
    "Paris", "flag", "<answer>x</answer>", "</information>", "<|im_end|>", "a < 5", "x <= y",
    "\tTab\x07bell", "Ünïcödé", "   ", "", "{question}", "{error}", "<image>", "line\nbreak",
    "é" * 400, "url://" + "p" * 500,
]  # fmt: skip


def _text(rng: random.Random) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(0, 6)))


def _turns() -> list[Turn]:
    rng = random.Random(15)
    prompts = default_prompt_set()
    turns = []
    for _ in range(300):
        question = _text(rng)
        n = rng.choice([0, 0, 1, 2, 5, 7])
        image_hits = [
            ImageHit(_text(rng), _text(rng), rng.choice([None, f"T{i}", f"T{i}"])) for i in range(n)
        ]
        text_hits = [TextHit(_text(rng), _text(rng), _text(rng)) for _ in range(n)]
        turns.append(render_image_results(image_hits, question, prompts))
        turns.append(render_text_results(text_hits, question, prompts))
        for tool in ("image", "text"):
            turns.append(render_search_error(tool, _text(rng), question, prompts))
    return turns


def observation_digest() -> str:
    """SHA-256 over every rendered turn's role, text and images, in order."""
    digest = hashlib.sha256()
    for turn in _turns():
        digest.update(repr((turn.role.value, turn.text, turn.images)).encode("utf-8"))
    return digest.hexdigest()


def test_default_observations_are_unchanged() -> None:
    assert observation_digest() == GOLDEN


if __name__ == "__main__":
    print(observation_digest())
