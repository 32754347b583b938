"""The image processor: shapes and token counts, odd inputs, clear errors, saved configs."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from tiny_models import image, image_processor

from mmsr.models import ImageProcessingError, ImageProcessor, ImageProcessorConfig

WHITE = [
    (1.0 - m) / s
    for m, s in zip(
        ImageProcessorConfig().image_mean, ImageProcessorConfig().image_std, strict=True
    )
]


def _png(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def test_tiny_image_gives_64_patches_and_16_tokens() -> None:
    out = image_processor()(image())
    assert out.grid_thw == (1, 8, 8)
    assert out.num_tokens == 16
    assert out.pixel_values.shape == (64, 3 * 2 * 14 * 14)
    assert out.pixel_values.dtype == torch.float32


@pytest.mark.parametrize("size", [(1, 1), (113, 57), (3000, 20), (112, 112), (57, 400)])
def test_fixed_size_makes_every_image_the_same(size: tuple[int, int]) -> None:
    out = image_processor()(image(size=size))
    assert out.grid_thw == (1, 8, 8) and out.num_tokens == 16
    assert image_processor().num_tokens(*size) == 16


@pytest.mark.parametrize("size", [(200, 100), (57, 400), (28, 28), (1000, 1000)])
def test_free_size_follows_smart_resize(size: tuple[int, int]) -> None:
    processor = ImageProcessor(
        ImageProcessorConfig(fixed_size=None, min_pixels=56 * 56, max_pixels=224 * 224)
    )
    out = processor(image(size=size))
    t, h, w = out.grid_thw
    assert out.num_tokens == t * h * w // 4 == processor.num_tokens(*size)
    assert out.pixel_values.shape[0] == t * h * w
    assert 56 * 56 <= h * w * 14 * 14 <= 224 * 224


@pytest.mark.parametrize("mode", ["RGBA", "LA", "L", "1", "P", "CMYK", "I;16"])
def test_modes_become_rgb(mode: str) -> None:
    out = image_processor()(Image.new(mode, (40, 30)))
    assert out.pixel_values.shape == (64, 1176)
    assert torch.isfinite(out.pixel_values).all()


def test_transparent_pixels_become_white() -> None:
    out = image_processor()(Image.new("RGBA", (112, 112), (255, 0, 0, 0)))
    # patch layout: (channel, temporal, 14, 14) per row; check each channel's first value
    values = out.pixel_values[0].reshape(3, 2 * 14 * 14)[:, 0].tolist()
    assert values == pytest.approx(WHITE, abs=1e-4)


def test_png_bytes_are_accepted_and_match_the_image() -> None:
    img = image((10, 120, 240))
    from_bytes = image_processor()(_png(img))
    assert torch.equal(from_bytes.pixel_values, image_processor()(img).pixel_values)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (b"not an image at all", "cannot decode"),
        (b"", "cannot decode"),
        ("a path?", "expected a PIL image"),
        (None, "expected a PIL image"),
    ],
)
def test_unusable_inputs_raise_clear_errors(bad: object, message: str) -> None:
    with pytest.raises(ImageProcessingError, match=message):
        image_processor()(bad)


def test_truncated_png_raises() -> None:
    data = _png(Image.effect_noise((64, 64), 50).convert("RGB"))
    with pytest.raises(ImageProcessingError):
        image_processor()(data[: len(data) // 2])


def test_too_elongated_image_raises() -> None:
    with pytest.raises(ImageProcessingError, match="elongated"):
        image_processor()(image(size=(2010, 10)))


def test_bad_configs_are_refused() -> None:
    with pytest.raises(ValueError, match="multiple of 28"):
        ImageProcessorConfig(fixed_size=100)
    with pytest.raises(ValueError, match="min_pixels"):
        ImageProcessorConfig(min_pixels=10, max_pixels=5)


def test_config_round_trip(tmp_path: Path) -> None:
    config = ImageProcessorConfig(fixed_size=56, min_pixels=56 * 56, max_pixels=56 * 56)
    ImageProcessor(config).save_pretrained(tmp_path)
    assert ImageProcessor.from_pretrained(tmp_path).config == config


def test_reads_a_real_qwen_preprocessor_config(tmp_path: Path) -> None:
    # the shape of Qwen2.5-VL-7B-Instruct's preprocessor_config.json
    real = {
        "min_pixels": 3136,
        "max_pixels": 12845056,
        "patch_size": 14,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": "Qwen2_5_VLProcessor",
    }
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(real))
    processor = ImageProcessor.from_pretrained(tmp_path)
    assert processor.config.fixed_size is None
    assert processor.config.max_pixels == 12845056
    # 640x480 → smart_resize to 644x476 → 46x34 patches → 391 tokens
    assert processor(image(size=(640, 480))).grid_thw == (1, 34, 46)
