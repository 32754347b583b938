"""Save and load a model, its tokenizer and its image processor as one Hugging Face folder.

What it is: ``save_pretrained`` writes an ordinary folder (``config.json``,
``model.safetensors``, ``generation_config.json``, the tokenizer files and
``preprocessor_config.json``); ``load_model`` reads such a folder — ours, or a real
Qwen2.5-VL checkpoint downloaded beforehand to a local path — with the same code. It never
touches the network (``local_files_only``).

What it is not: training checkpoints with optimizer state (``mmsr.train``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformers import (
    AutoTokenizer,
    PreTrainedTokenizerBase,
    Qwen2_5_VLForConditionalGeneration,
)

from mmsr.models.image_processor import PREPROCESSOR_FILE, ImageProcessor, ImageProcessorConfig
from mmsr.models.tokenizer import CHAT_TEMPLATE

logger = logging.getLogger(__name__)


def save_pretrained(
    model: Qwen2_5_VLForConditionalGeneration,
    tokenizer: PreTrainedTokenizerBase,
    processor_config: ImageProcessorConfig | ImageProcessor,
    folder: str | Path,
    *,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write everything ``load_model`` needs into ``folder`` (created if missing); with
    ``state_dict``, those weights instead of the model's own (e.g. LoRA merged into a copy)."""
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True, state_dict=state_dict)
    tokenizer.save_pretrained(path)
    processor = (
        processor_config
        if isinstance(processor_config, ImageProcessor)
        else ImageProcessor(processor_config)
    )
    processor.save_pretrained(path)
    logger.info("saved model, tokenizer and image processor to %s", path)
    return path


def load_model(
    folder: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    attention: str = "sdpa",
) -> tuple[Qwen2_5_VLForConditionalGeneration, PreTrainedTokenizerBase, ImageProcessor]:
    """``(model, tokenizer, image_processor)`` from a local folder, in eval mode, with
    transformers' ``attention`` implementation (``sdpa``, its default, or ``eager``).

    A folder without a chat template (some real checkpoints keep it elsewhere) gets ours,
    which renders as Qwen2-VL's.
    """
    path = Path(folder)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} holds no config.json: not a model folder")
    if not (path / PREPROCESSOR_FILE).is_file():
        raise FileNotFoundError(f"{path} holds no {PREPROCESSOR_FILE}")
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        path, local_files_only=True, dtype=dtype, attn_implementation=attention
    )
    # transformers types ``to`` through a decorator that mypy reads wrongly.
    model = model.to(torch.device(device)).train(False)  # type: ignore[arg-type]
    tokenizer, processor = load_tokenizer_and_processor(path)
    logger.info("loaded %s (%s, %s)", path, model.config.model_type, dtype)
    return model, tokenizer, processor


def load_tokenizer_and_processor(
    folder: str | Path,
) -> tuple[PreTrainedTokenizerBase, ImageProcessor]:
    """The tokenizer (with our chat template where the folder has none) and image processor
    of a model folder, without its weights (e.g. for a vLLM engine, which loads its own)."""
    path = Path(folder)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer, ImageProcessor.from_pretrained(path)
