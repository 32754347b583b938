"""Images to Qwen2.5-VL vision inputs: pixel patches, the (t, h, w) grid and the token count.

What it is: ``ImageProcessor``, a thin layer on ``transformers``' ``Qwen2VLImageProcessorPil``
(pure PIL + numpy; the stock fast processor needs torchvision, which does not load beside the
CPU torch wheel). It checks and converts its input first — RGBA is put on white, grayscale and
palette images become RGB, tiny, huge, degenerate or unreadable images raise
``ImageProcessingError`` naming the problem — then lets Qwen's code resize, normalise and
patchify. ``fixed_size`` (the tiny preset: 112) first resizes every image to a square of that
side, so every image gives the same number of visual tokens (112 px → 8×8 patches → 16 tokens
after the 2×2 merge); with ``fixed_size=None`` Qwen's ``smart_resize`` keeps the aspect ratio
between ``min_pixels`` and ``max_pixels``, as for a real checkpoint.

What it is not: placeholder expansion in text (``mmsr.models.chat_encoder``) or video support.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
    Qwen2VLImageProcessorPil,
    smart_resize,
)

from mmsr.config import read_json

logger = logging.getLogger(__name__)

PREPROCESSOR_FILE = "preprocessor_config.json"
# Qwen2-VL's normalisation constants (OpenAI CLIP), the same in every real checkpoint.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MAX_ASPECT_RATIO = 200  # smart_resize refuses more


class ImageProcessingError(ValueError):
    """An image cannot be turned into vision inputs; the message says why."""


@dataclass(frozen=True)
class ImageProcessorConfig:
    """How images become patches; the defaults are the tiny preset's."""

    fixed_size: int | None = 112
    """Resize every image to this square side first (None: keep the aspect ratio)."""
    min_pixels: int = 112 * 112
    """Fewest pixels after resizing (Qwen's ``min_pixels``)."""
    max_pixels: int = 112 * 112
    """Most pixels after resizing (Qwen's ``max_pixels``)."""
    patch_size: int = 14
    """Side of one vision patch in pixels."""
    merge_size: int = 2
    """Patches merged per side into one language-model token."""
    temporal_patch_size: int = 2
    """Frames per temporal patch (a still image is repeated)."""
    image_mean: tuple[float, float, float] = CLIP_MEAN
    """Per-channel mean for normalisation."""
    image_std: tuple[float, float, float] = CLIP_STD
    """Per-channel standard deviation for normalisation."""

    def __post_init__(self) -> None:
        factor = self.patch_size * self.merge_size
        if self.fixed_size is not None and (self.fixed_size <= 0 or self.fixed_size % factor):
            raise ValueError(
                f"fixed_size {self.fixed_size} must be a positive multiple of {factor}"
            )
        if not 0 < self.min_pixels <= self.max_pixels:
            raise ValueError(
                f"need 0 < min_pixels <= max_pixels, got {self.min_pixels}, {self.max_pixels}"
            )


@dataclass(frozen=True)
class ProcessedImage:
    """One image ready for the vision tower."""

    pixel_values: torch.Tensor
    """(grid_t * grid_h * grid_w, channels * temporal_patch * patch * patch) float32 patches."""
    grid_thw: tuple[int, int, int]
    """Patches along time, height and width (before the merge)."""
    num_tokens: int
    """``<|image_pad|>`` tokens this image takes in the text: t * h * w / merge_size²."""


class ImageProcessor:
    """Turns PIL images (or encoded image bytes) into ``ProcessedImage``s."""

    def __init__(self, config: ImageProcessorConfig | None = None) -> None:
        self.config = config or ImageProcessorConfig()
        c = self.config
        self._qwen = Qwen2VLImageProcessorPil(
            min_pixels=c.min_pixels,
            max_pixels=c.max_pixels,
            patch_size=c.patch_size,
            merge_size=c.merge_size,
            temporal_patch_size=c.temporal_patch_size,
            image_mean=list(c.image_mean),
            image_std=list(c.image_std),
        )

    def __call__(self, image: Any) -> ProcessedImage:
        """Process one image; raises ``ImageProcessingError`` for anything unusable."""
        out = self._qwen(images=[self.prepare(image)], return_tensors="pt")
        t, h, w = (int(x) for x in out["image_grid_thw"][0].tolist())
        pixel_values = out["pixel_values"].to(torch.float32)
        return ProcessedImage(pixel_values, (t, h, w), t * h * w // self.config.merge_size**2)

    def prepare(self, image: Any) -> Image.Image:
        """The checked RGB image (at ``fixed_size`` when set) that ``__call__`` patchifies: what
        another Qwen2-VL processor (a rollout server's) must get to count the same tokens."""
        rgb = self._to_rgb(image)
        if self.config.fixed_size is not None:
            side = self.config.fixed_size
            rgb = rgb.resize((side, side), Image.Resampling.BICUBIC)
        return rgb

    def num_tokens(self, width: int, height: int) -> int:
        """Visual tokens an image of this size takes, without processing it."""
        c = self.config
        if c.fixed_size is not None:
            width = height = c.fixed_size
        factor = c.patch_size * c.merge_size
        h, w = smart_resize(height, width, factor, c.min_pixels, c.max_pixels)
        return int(h // c.patch_size) * int(w // c.patch_size) // c.merge_size**2

    def _to_rgb(self, image: Any) -> Image.Image:
        if isinstance(image, bytes | bytearray):
            image = _decode(bytes(image))
        if not isinstance(image, Image.Image):
            raise ImageProcessingError(f"expected a PIL image or image bytes, got {type(image)}")
        width, height = image.size
        if width < 1 or height < 1:
            raise ImageProcessingError(f"image has no pixels ({width}x{height})")
        if max(width, height) / min(width, height) > MAX_ASPECT_RATIO:
            raise ImageProcessingError(
                f"image {width}x{height} is more elongated than {MAX_ASPECT_RATIO}:1"
            )
        try:
            image.load()
        except (OSError, ValueError) as err:  # truncated or corrupt data behind a valid header
            raise ImageProcessingError(f"image data cannot be read: {err}") from err
        return _flatten_to_rgb(image)

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write ``preprocessor_config.json`` readable by us and by ``transformers``."""
        path = Path(folder) / PREPROCESSOR_FILE
        c = self.config
        data: dict[str, Any] = {
            "image_processor_type": "Qwen2VLImageProcessor",
            "min_pixels": c.min_pixels,
            "max_pixels": c.max_pixels,
            "patch_size": c.patch_size,
            "merge_size": c.merge_size,
            "temporal_patch_size": c.temporal_patch_size,
            "image_mean": list(c.image_mean),
            "image_std": list(c.image_std),
            "mmsr_fixed_size": c.fixed_size,
        }
        path.write_text(json.dumps(data, indent=2) + "\n")
        return path

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> ImageProcessor:
        """Read ``preprocessor_config.json`` (ours, or a real Qwen2/2.5-VL checkpoint's)."""
        data = read_json(Path(folder) / PREPROCESSOR_FILE)
        if not isinstance(data, dict):
            raise ValueError(f"{Path(folder) / PREPROCESSOR_FILE}: expected a JSON object")
        defaults = asdict(
            ImageProcessorConfig(fixed_size=None, max_pixels=12845056, min_pixels=3136)
        )
        size = data.get("size") or {}
        fields = {
            "fixed_size": data.get("mmsr_fixed_size"),
            "min_pixels": data.get("min_pixels", size.get("shortest_edge", defaults["min_pixels"])),
            "max_pixels": data.get("max_pixels", size.get("longest_edge", defaults["max_pixels"])),
        }
        for key in ("patch_size", "merge_size", "temporal_patch_size"):
            fields[key] = data.get(key, defaults[key])
        for key in ("image_mean", "image_std"):
            fields[key] = tuple(data.get(key, defaults[key]))
        return cls(ImageProcessorConfig(**fields))


def _decode(data: bytes) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
        raise ImageProcessingError(f"cannot decode image bytes ({len(data)} bytes): {err}") from err
    return image


def _flatten_to_rgb(image: Image.Image) -> Image.Image:
    """RGB, with any transparency composited on white (emoji PNGs are mostly transparent)."""
    if image.mode == "RGB":
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA") or image.mode.endswith("A"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    try:
        return image.convert("RGB")
    except (OSError, ValueError) as err:
        raise ImageProcessingError(f"cannot convert {image.mode} image to RGB: {err}") from err
