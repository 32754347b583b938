"""Tiny Qwen2.5-VL models built from a config: presets and ``build_tiny_model``.

What it is: ``TinyVLConfig`` (one frozen dataclass, every size knob one field), the
``PRESETS`` registry (``"tiny"``, the default policy, ≈4.5 M parameters with a
6k vocabulary; ``"micro"``, for fast tests) and ``build_tiny_model``, which turns a preset, the
tokenizer and a seed into a randomly initialised ``Qwen2_5_VLForConditionalGeneration``. No
weights are downloaded: the model is built from a config in-process. The vocabulary size and
every special token id come from the tokenizer.

What it is not: loading trained or real checkpoints (``mmsr.models.io``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from transformers import (
    PreTrainedTokenizerBase,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
)

from mmsr.models.image_processor import ImageProcessorConfig
from mmsr.models.tokenizer import (
    ENDOFTEXT,
    IM_END,
    IMAGE_PAD,
    VIDEO_PAD,
    VISION_END,
    VISION_START,
    token_id,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TinyVLConfig:
    """Sizes of a tiny Qwen2.5-VL; the defaults are the ``"tiny"`` preset."""

    hidden_size: int = 256
    """Width of the language model."""
    num_layers: int = 4
    """Decoder layers of the language model."""
    num_heads: int = 4
    """Attention heads of the language model (head_dim = hidden_size / num_heads)."""
    num_kv_heads: int = 2
    """Key/value heads (grouped-query attention, as in Qwen2.5)."""
    intermediate_size: int = 512
    """Width of the language model's gated MLP."""
    mrope_section: tuple[int, int, int] = (8, 12, 12)
    """Rotary frequencies given to (time, height, width); sums to head_dim / 2."""
    rope_theta: float = 10000.0
    """Base of the rotary frequencies."""
    max_position_embeddings: int = 4096
    """Longest sequence the rotary cache is sized for."""
    vision_depth: int = 2
    """Blocks of the vision tower."""
    vision_hidden_size: int = 96
    """Width of the vision tower."""
    vision_heads: int = 4
    """Attention heads of the vision tower."""
    vision_intermediate_size: int = 192
    """Width of the vision tower's gated MLP."""
    image_size: int = 112
    """Side images are resized to: (112 / 14)² = 64 patches → 16 tokens after the merge."""
    patch_size: int = 14
    """Side of one vision patch in pixels."""
    merge_size: int = 2
    """Patches merged per side into one language-model token."""
    tie_word_embeddings: bool = True
    """Share the input embedding and the output head (most of a tiny model is its vocabulary)."""

    def __post_init__(self) -> None:
        head_dim, rem = divmod(self.hidden_size, self.num_heads)
        if rem or self.num_heads % self.num_kv_heads:
            raise ValueError("hidden_size must divide into num_heads, num_heads into kv heads")
        if sum(self.mrope_section) * 2 != head_dim:
            raise ValueError(f"mrope_section {self.mrope_section} must sum to {head_dim // 2}")
        if self.vision_hidden_size % self.vision_heads:
            raise ValueError("vision_hidden_size must divide into vision_heads")
        if self.image_size % (self.patch_size * self.merge_size):
            raise ValueError("image_size must be a multiple of patch_size * merge_size")

    @property
    def tokens_per_image(self) -> int:
        """Visual tokens one (square, fixed-size) image takes in the text."""
        return (self.image_size // self.patch_size // self.merge_size) ** 2

    def image_processor_config(self) -> ImageProcessorConfig:
        """The image processor that matches this model (fixed square images)."""
        pixels = self.image_size**2
        return ImageProcessorConfig(
            fixed_size=self.image_size,
            min_pixels=pixels,
            max_pixels=pixels,
            patch_size=self.patch_size,
            merge_size=self.merge_size,
        )


PRESETS: dict[str, TinyVLConfig] = {
    "tiny": TinyVLConfig(),
    "micro": TinyVLConfig(
        hidden_size=64,
        num_layers=2,
        num_heads=2,
        num_kv_heads=1,
        intermediate_size=128,
        mrope_section=(4, 6, 6),
        vision_depth=1,
        vision_hidden_size=32,
        vision_heads=2,
        vision_intermediate_size=64,
        image_size=56,
    ),
}


def resolve_config(preset_or_config: str | TinyVLConfig) -> TinyVLConfig:
    """A preset by name, or the config itself; unknown names are errors."""
    if isinstance(preset_or_config, TinyVLConfig):
        return preset_or_config
    if preset_or_config not in PRESETS:
        raise KeyError(f"unknown model preset {preset_or_config!r}; known: {sorted(PRESETS)}")
    return PRESETS[preset_or_config]


def special_token_ids(tokenizer: PreTrainedTokenizerBase) -> dict[str, int]:
    """The Qwen2.5-VL config's special-token keys, as ids of ``tokenizer``."""
    return {
        "bos_token_id": token_id(tokenizer, ENDOFTEXT),
        "pad_token_id": token_id(tokenizer, ENDOFTEXT),
        "eos_token_id": token_id(tokenizer, IM_END),
        "image_token_id": token_id(tokenizer, IMAGE_PAD),
        "video_token_id": token_id(tokenizer, VIDEO_PAD),
        "vision_start_token_id": token_id(tokenizer, VISION_START),
        "vision_end_token_id": token_id(tokenizer, VISION_END),
    }


def hf_config(cfg: TinyVLConfig, tokenizer: PreTrainedTokenizerBase) -> Qwen2_5_VLConfig:
    """The ``transformers`` config of a tiny model whose vocabulary is ``tokenizer``'s."""
    ids = special_token_ids(tokenizer)
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "max_position_embeddings": cfg.max_position_embeddings,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": cfg.rope_theta,
            "mrope_section": list(cfg.mrope_section),
        },
        "bos_token_id": ids["bos_token_id"],
        "eos_token_id": ids["eos_token_id"],
        "pad_token_id": ids["pad_token_id"],
        "tie_word_embeddings": cfg.tie_word_embeddings,
    }
    vision = {
        "depth": cfg.vision_depth,
        "hidden_size": cfg.vision_hidden_size,
        "intermediate_size": cfg.vision_intermediate_size,
        "num_heads": cfg.vision_heads,
        "patch_size": cfg.patch_size,
        "spatial_merge_size": cfg.merge_size,
        "out_hidden_size": cfg.hidden_size,
        # One window covers a whole tiny image; the last block attends globally anyway.
        "window_size": cfg.image_size,
        "fullatt_block_indexes": [cfg.vision_depth - 1],
    }
    return Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["image_token_id"],
        video_token_id=ids["video_token_id"],
        vision_start_token_id=ids["vision_start_token_id"],
        vision_end_token_id=ids["vision_end_token_id"],
        tie_word_embeddings=cfg.tie_word_embeddings,
    )


def build_tiny_model(
    preset_or_config: str | TinyVLConfig,
    tokenizer: PreTrainedTokenizerBase,
    seed: int = 0,
) -> Qwen2_5_VLForConditionalGeneration:
    """A randomly initialised tiny Qwen2.5-VL; the same seed gives the same weights.

    The global torch RNG is left as it was: the weights come from a forked RNG state.
    """
    config = hf_config(resolve_config(preset_or_config), tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(config)  # type: ignore[no-untyped-call]
    text = model.config.get_text_config()
    # Generation stops at <|im_end|> (end of a turn) or <|endoftext|>, as in Qwen's own config.
    model.generation_config.eos_token_id = [text.eos_token_id, text.pad_token_id]
    model.generation_config.pad_token_id = text.pad_token_id
    model.train(False)
    logger.info("built tiny Qwen2.5-VL: %d parameters", count_parameters(model))
    return model


def count_parameters(model: torch.nn.Module) -> int:
    """Distinct parameters (tied weights counted once)."""
    return sum(p.numel() for p in model.parameters())
