"""Fixed random codes for the atomic tokens (entity names, answer values).

The tiny model's input and output embeddings are tied, so a token is copied by carrying its
embedding from where it was read to where it is written. With AdamW, every atomic token's row
is also pushed at every trained position where it is *not* the target (the softmax's
denominator), by an update of about the learning rate whatever the gradient's size: rows of
tokens that are rarely targets drift together. Measured on the first committed warm start
(62 min of SFT at lr 1.5e-3–2e-3): the 1,589 atomic rows had a mean pairwise cosine of 0.74
(random rows: ≈ 0), and the model copied nothing, not even a name it had written itself ten
tokens earlier. So a run gives every atomic token a random code of its own at the start and
keeps it fixed (``freeze_rows``): codes of distinct tokens stay nearly orthogonal, copying is
one mapping for all of them, and it works for tokens the run never saw as targets.

Not here: which ids are atomic (``mmsr.models.added_atomic_ids``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
from torch.utils.hooks import RemovableHandle


def embedding_weight(model: Any) -> torch.nn.Parameter:
    weight: torch.nn.Parameter = model.get_input_embeddings().weight
    return weight


def set_random_codes(
    model: Any, ids: Sequence[int], std: float, seed: int, shared: float = 0.0
) -> None:
    """Replace the embedding rows of ``ids`` with ``shared`` · u + N(0, std²) codes.

    u is one random unit vector common to all of them (drawn from ``seed`` like the codes): a
    direction that marks "an atomic token", so one attention head can find every name and value
    in the context before it has learned where each one stands.
    """
    if not ids:
        return
    weight = embedding_weight(model)
    generator = torch.Generator().manual_seed(seed)
    codes = torch.randn(len(ids), weight.shape[1], generator=generator) * std
    common = torch.nn.functional.normalize(torch.randn(weight.shape[1], generator=generator), dim=0)
    codes = codes + shared * common
    with torch.no_grad():
        weight[torch.tensor(list(ids), device=weight.device)] = codes.to(weight)


def freeze_rows(model: Any, ids: Sequence[int]) -> RemovableHandle | None:
    """Zero the gradient of the embedding rows ``ids`` (tied: the output rows too).

    Keep the embedding out of weight decay as well (``param_groups``): AdamW decays a row
    whatever its gradient.
    """
    if not ids:
        return None
    weight = embedding_weight(model)
    index = torch.tensor(sorted(set(ids)), device=weight.device)
    hook = weight.register_hook(lambda grad: grad.index_fill(0, index, 0.0))  # type: ignore[no-untyped-call]
    return cast(RemovableHandle, hook)


def param_groups(
    model: Any, weight_decay: float, vision_lr_scale: float = 1.0
) -> list[dict[str, Any]]:
    """AdamW groups: the embedding without weight decay, every other parameter with it; with
    ``vision_lr_scale`` ≠ 1 the vision tower (``model.model.visual``) is a group of its own
    whose ``lr_scale`` the training loop multiplies its learning rate by."""
    embedding = embedding_weight(model)
    vision = {id(p) for p in model.model.visual.parameters()} if vision_lr_scale != 1.0 else set()
    rest = [p for p in model.parameters() if p is not embedding and id(p) not in vision]
    groups: list[dict[str, Any]] = [
        {"params": [embedding], "weight_decay": 0.0, "lr_scale": 1.0},
        {"params": rest, "weight_decay": weight_decay, "lr_scale": 1.0},
    ]
    if vision:
        tower = [p for p in model.model.visual.parameters()]
        groups.append({"params": tower, "weight_decay": weight_decay, "lr_scale": vision_lr_scale})
    return groups
