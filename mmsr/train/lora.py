"""LoRA for GRPO on one GPU (``peft``, the ``gpu`` extra): adapters, the reference, checkpoints.

A 7B policy with fp32-master AdamW (≈ 16 bytes per parameter) plus a reference copy does not fit
one 80 GB GPU; with rank-r adapters on the language model's linear layers only the adapters
(float32) are trained and the frozen bf16 base doubles as the KL reference: ``Reference``
calls the model with its adapters disabled, so no second copy is held.
Checkpoints stay ordinary model folders: ``merged_state_dict`` folds the adapters into a copy
of the weights (for ``mmsr eval``), and ``adapter_state`` is what a resume loads back.

``peft`` is imported only here, only when LoRA is asked for.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from mmsr.train.memory import LORA_TARGETS

# the language model's layers only: the vision tower's MLP uses the same names
TARGET_PATTERN = rf".*language_model\.layers\.\d+\.(self_attn|mlp)\.({'|'.join(LORA_TARGETS)})"


def _peft() -> Any:
    try:
        import peft
    except ImportError as err:
        raise ImportError(
            "model.lora_rank > 0 needs peft: pip install -e '.[gpu]' (or set model.lora_rank 0)"
        ) from err
    return peft


def add_lora(model: Any, rank: int, alpha: float, seed: int = 0) -> Any:
    """Wrap ``model`` with rank-``rank`` adapters (B = 0: the wrapped model equals the base);
    returns the ``PeftModel``. Only the adapters require gradients; they are kept in float32."""
    peft = _peft()
    config = peft.LoraConfig(
        r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=TARGET_PATTERN
    )
    torch.manual_seed(seed)  # A's random init
    return peft.get_peft_model(model, config)


class Reference:
    """The KL reference of a LoRA policy: the same model with its adapters disabled."""

    def __init__(self, peft_model: Any) -> None:
        self.peft_model = peft_model

    @torch.no_grad()
    def __call__(self, **inputs: Any) -> Any:
        with self.peft_model.disable_adapter():
            return self.peft_model(**inputs)


def is_lora(model: Any) -> bool:
    return any("lora_" in name for name, _ in model.named_parameters())


def adapter_state(model: Any) -> dict[str, torch.Tensor]:
    """The adapters' tensors (CPU copies), what a resume loads back."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if "lora_" in k}


def load_adapter_state(model: Any, state: dict[str, torch.Tensor]) -> None:
    expected = {k for k in model.state_dict() if "lora_" in k}
    if set(state) != expected:
        raise ValueError("the checkpoint's adapters do not match the model's (another rank?)")
    model.load_state_dict(state, strict=False)


def merged_weights(model: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` of ``model`` (adapters injected, e.g. ``PeftModel.get_base_model()``)
    with every adapter folded in (W + scale·B·A), under the plain model's key names, on the
    model's device, one merged weight at a time; the live weights are not touched."""
    peft = _peft()
    layers = {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, peft.tuners.lora.LoraLayer)
    }
    for key, value in model.state_dict().items():
        if "lora_" in key:
            continue
        module, found, leaf = key.rpartition(".base_layer.")
        if not found:
            yield key, value.detach()
            continue
        tensor = value.detach()
        if leaf == "weight":
            with torch.no_grad():
                delta = layers[module].get_delta_weight("default")
                tensor = (tensor.float() + delta.float()).to(value.dtype)
        yield f"{module}.{leaf}", tensor


def merged_state_dict(model: Any) -> dict[str, torch.Tensor]:
    """``merged_weights`` as a state dict on the CPU (a checkpoint's plain model folder)."""
    return {key: tensor.cpu() for key, tensor in merged_weights(model)}
