"""A Qwen2.5-VL processor that veRL can use without torchvision; verl-free.

veRL's ``hf_processor`` loads the model's stock processor, whose image and video processors need
torchvision (which does not load beside the CPU torch wheel), and then binds the model's
``get_rope_index`` to it; when loading fails it returns ``None`` and veRL treats the policy as a
text model: 1-D position ids, and a Qwen2.5-VL forward pass that fails. ``cpu_processor`` builds
the processor on transformers' PIL image processor with the model folder's settings and binds
``get_rope_index`` as veRL does (``bind_rope_index``), so veRL's agent-loop post-processing
computes the 3-D M-RoPE position ids (time, height, width) the model needs.

Not here: video (mmsr's questions have one image each), where veRL picks this processor up
(``mmsr.integrations.verl.cpu``).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import MethodType
from typing import Any

PREPROCESSOR_KEYS = (
    "min_pixels",
    "max_pixels",
    "patch_size",
    "merge_size",
    "temporal_patch_size",
    "image_mean",
    "image_std",
)


def pil_processor(image_processor: Any, tokenizer: Any, chat_template: str | None = None) -> Any:
    """Qwen2.5-VL's processor over ``image_processor`` and ``tokenizer``, without a video
    processor (the stock one needs torchvision)."""
    from transformers import Qwen2_5_VLProcessor
    from transformers.video_processing_utils import BaseVideoProcessor

    class PilProcessor(Qwen2_5_VLProcessor):  # type: ignore[misc, unused-ignore]
        """Qwen2.5-VL's processor with no video processor."""

        def check_argument_for_proper_class(self, name: str, argument: Any) -> Any:
            if name == "video_processor":
                return type(argument)
            return super().check_argument_for_proper_class(name, argument)  # type: ignore[no-untyped-call, unused-ignore]

    video = BaseVideoProcessor.__new__(BaseVideoProcessor)
    template = chat_template or getattr(tokenizer, "chat_template", None) or "unused"
    processor: Any = PilProcessor  # transformers leaves its __init__ untyped
    return processor(image_processor, tokenizer, video, chat_template=template)


def bind_rope_index(processor: Any, config: Any) -> Any:
    """``processor`` with the model's ``get_rope_index`` (and ``get_vision_position_ids`` where
    transformers has it) bound to it over the model's ``config``, as veRL's ``hf_processor``
    does for Qwen2.5-VL; returns ``processor``."""
    from transformers.models.qwen2_5_vl import Qwen2_5_VLModel

    processor.config = config
    processor.get_rope_index = MethodType(Qwen2_5_VLModel.get_rope_index, processor)
    vision = getattr(Qwen2_5_VLModel, "get_vision_position_ids", None)
    if vision is not None:
        processor.get_vision_position_ids = MethodType(vision, processor)
    return processor


def cpu_processor(path: str | Path) -> Any:
    """The processor of the Qwen2.5-VL model folder ``path`` (its ``preprocessor_config.json``,
    tokenizer and config), with ``get_rope_index`` bound."""
    from transformers import AutoConfig, AutoTokenizer
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    folder = Path(path)
    settings = json.loads((folder / "preprocessor_config.json").read_text())
    images = Qwen2VLImageProcessorPil(
        **{k: settings[k] for k in PREPROCESSOR_KEYS if k in settings}
    )
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    processor = pil_processor(images, tokenizer)
    return bind_rope_index(processor, AutoConfig.from_pretrained(str(folder)))
