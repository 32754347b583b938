"""Evaluation protocols: named presets of how questions are shown, answered and judged.

* ``mmsr``: our own protocol (tagged answers for every method, mmsr's judge, images as loaded).
* ``paper``: the paper's (§4 and the release's code): the paper's judge (``judge_style``
  ``paper``, ``mmsr.rewards.judge.PaperJudge``), untagged short answers for the ``direct`` and
  ``rag`` baselines, the question image resized as the release's data loader does
  (``release_resize``), greedy decoding and the release's response length.

A protocol resolves into ``EvalRunConfig`` and is saved whole in the run's ``config.json``.
Not here: the judge itself (``mmsr.rewards.judge``) or the method prompts (``mmsr.protocol``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

RELEASE_MAX_PIXELS = 672 * 672 * 2
RELEASE_MIN_PIXELS = 512 * 512
# The release's GRPO script: ``data.max_response_length=2048`` (one assistant turn).
RELEASE_MAX_NEW_TOKENS = 2048


@dataclass(frozen=True)
class EvalProtocol:
    """How an evaluation shows questions, reads answers and judges them."""

    name: str = "mmsr"
    """The preset's name (``PROTOCOLS``)."""
    judge_style: str = "mmsr"
    """``mmsr`` or ``paper`` (``mmsr.rewards.judge.JUDGE_STYLES``)."""
    untagged_baselines: bool = False
    """``direct``/``rag`` ask for a short untagged answer; an untagged reply is the answer."""
    resize_images: bool = False
    """Resize the question image as the release does before the processor sees it."""
    max_new_tokens: int | None = None
    """The assistant turn's token limit the protocol sets (None: the run's own)."""
    greedy: bool = False
    """Sampling must be greedy (temperature 0)."""


PROTOCOLS: dict[str, EvalProtocol] = {
    "mmsr": EvalProtocol(),
    "paper": EvalProtocol(
        name="paper",
        judge_style="paper",
        untagged_baselines=True,
        resize_images=True,
        max_new_tokens=RELEASE_MAX_NEW_TOKENS,
        greedy=True,
    ),
}


def release_resize(
    image: Any, max_pixels: int = RELEASE_MAX_PIXELS, min_pixels: int = RELEASE_MIN_PIXELS
) -> Any:
    """The release's resizing: an area above ``max_pixels`` scaled down to it, then one below
    ``min_pixels`` scaled up to it, aspect kept, NEAREST resampling, then RGB.

    >>> from PIL import Image
    >>> release_resize(Image.new("L", (100, 100))).size
    (512, 512)
    >>> release_resize(Image.new("RGB", (2000, 1000))).size
    (1344, 672)
    """
    if image.width * image.height > max_pixels:
        image = _scale(image, max_pixels)
    if image.width * image.height < min_pixels:
        image = _scale(image, min_pixels)
    return image if image.mode == "RGB" else image.convert("RGB")


def _scale(image: Any, pixels: int) -> Any:
    """``image`` scaled to about ``pixels`` pixels (sides truncated, as the release does)."""
    from PIL import Image

    factor = math.sqrt(pixels / (image.width * image.height))
    size = (int(image.width * factor), int(image.height * factor))
    return image.resize(size, resample=Image.Resampling.NEAREST)
