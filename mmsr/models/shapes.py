"""The architectures of the real Qwen2.5-VL checkpoints, as ``config.json`` mappings (no weights).

Copied from the published ``config.json`` of Qwen2.5-VL-3B-Instruct and -7B-Instruct (the
fields that fix the shapes and the special token ids). They let a machine with no checkpoint
plan memory (``mmsr.train.memory``) and build a randomly initialised model of the real shape
(``bench/gpu_smoke.py``) — nothing is downloaded. ``Qwen2_5_VLConfig(**SHAPES[name])`` builds
the transformers config.
"""

from __future__ import annotations

from typing import Any

_SPECIAL_IDS = {
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "pad_token_id": 151643,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
    "vision_token_id": 151654,
    "image_token_id": 151655,
    "video_token_id": 151656,
}


def _vision(out_hidden_size: int) -> dict[str, Any]:
    return {
        "depth": 32,
        "hidden_act": "silu",
        "hidden_size": 1280,
        "intermediate_size": 3420,
        "num_heads": 16,
        "in_chans": 3,
        "out_hidden_size": out_hidden_size,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "spatial_patch_size": 14,
        "window_size": 112,
        "fullatt_block_indexes": [7, 15, 23, 31],
        "tokens_per_second": 2,
        "temporal_patch_size": 2,
    }


def _text(**shape: Any) -> dict[str, Any]:
    return {
        "model_type": "qwen2_5_vl",
        "hidden_act": "silu",
        "max_position_embeddings": 128000,
        "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0,
        "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
        "use_sliding_window": False,
        "sliding_window": 32768,
        "attention_dropout": 0.0,
        **_SPECIAL_IDS,
        **shape,
    }


SHAPES: dict[str, dict[str, Any]] = {
    "qwen2.5-vl-3b": _text(
        hidden_size=2048,
        intermediate_size=11008,
        num_hidden_layers=36,
        num_attention_heads=16,
        num_key_value_heads=2,
        max_window_layers=70,
        tie_word_embeddings=True,
        vocab_size=151936,
        vision_config=_vision(2048),
    ),
    "qwen2.5-vl-7b": _text(
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        max_window_layers=28,
        tie_word_embeddings=False,
        vocab_size=152064,
        vision_config=_vision(3584),
    ),
}
