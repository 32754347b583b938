"""Models: tiny Qwen2.5-VL from a config, its tokenizer, image processor, chat encoding, I/O.

The only package (with ``policy``, ``rollout`` and ``train``) that imports torch and
transformers; ``import mmsr`` stays cheap. Typical use::

    tokenizer = train_tokenizer(texts, atomic_tokens=entity_names)
    model = build_tiny_model("tiny", tokenizer, seed=0)
    encoder = ChatEncoder(tokenizer, ImageProcessor(PRESETS["tiny"].image_processor_config()))
    segment = encoder.encode_turn(first_user_turn, first=True, add_generation_prompt=True)
    ids = torch.tensor([segment.input_ids])                       # (1, T)
    positions = rope_position_ids(model, ids, segment.image_grid_thw)  # (3, 1, T)
    logits = model(input_ids=ids, pixel_values=segment.pixel_values,
                   image_grid_thw=segment.image_grid_thw, position_ids=positions).logits
    save_pretrained(model, tokenizer, encoder.image_processor, "out/tiny")
    model, tokenizer, image_processor = load_model("out/tiny")    # also a real Qwen2.5-VL folder

Always pass 3-D ``position_ids`` to a forward pass, and ``mm_token_type_ids`` to ``generate``:
without them transformers 5.10 silently uses 1-D positions (see ``mmsr.models.positions``).
"""

from mmsr.models.chat_encoder import ChatEncoder, EncodedSegment, stack_images
from mmsr.models.config import (
    PRESETS,
    TinyVLConfig,
    build_tiny_model,
    count_parameters,
    hf_config,
    resolve_config,
)
from mmsr.models.image_processor import (
    ImageProcessingError,
    ImageProcessor,
    ImageProcessorConfig,
    ProcessedImage,
)
from mmsr.models.io import load_model, save_pretrained
from mmsr.models.positions import mm_token_type_ids, rope_position_ids
from mmsr.models.tokenizer import (
    CHAT_TEMPLATE,
    SPECIAL_TOKENS,
    added_atomic_ids,
    atomic_token_ids,
    special_token_ids,
    suppressed_token_ids,
    text_decoder,
    token_id,
    train_tokenizer,
    wrap_tokenizer,
)

__all__ = [
    "CHAT_TEMPLATE",
    "PRESETS",
    "SPECIAL_TOKENS",
    "ChatEncoder",
    "EncodedSegment",
    "ImageProcessingError",
    "ImageProcessor",
    "ImageProcessorConfig",
    "ProcessedImage",
    "TinyVLConfig",
    "added_atomic_ids",
    "atomic_token_ids",
    "build_tiny_model",
    "count_parameters",
    "hf_config",
    "load_model",
    "mm_token_type_ids",
    "resolve_config",
    "rope_position_ids",
    "save_pretrained",
    "special_token_ids",
    "stack_images",
    "suppressed_token_ids",
    "text_decoder",
    "token_id",
    "train_tokenizer",
    "wrap_tokenizer",
]
