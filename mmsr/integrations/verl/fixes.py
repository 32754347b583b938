"""Fixes to veRL 0.9.1 that every mmsr run on veRL needs, on GPUs as on the CPU; imports verl.

veRL imports this module in each of its processes (driver, trainer workers, agent-loop
workers, rollout servers) when ``VERL_USE_EXTERNAL_MODULES`` names it, which ``mmsr train
verl`` does. ``install`` is idempotent and runs on import.

The one fix here: veRL's no-padding conversion (``verl.workers.utils.padding
.left_right_2_no_padding``) nests each row's ``(4, L)`` M-RoPE position ids with
``torch.nested.as_nested_tensor``, which takes the first dimension whose size differs between
rows as the ragged one. When every row of a micro-batch has the same valid length, no
dimension differs and torch makes the first one (the 4 rope axes) ragged; after veRL's own
``maybe_fix_3d_position_ids`` moves the ragged index to the last dimension, the offsets still
describe the rope axes and the forward pass fails with "split_with_sizes ... got [4, 4, 4, 4]".
Frequent with tiny batches (a group of rollouts that all end the same way), rare at scale. The
wrapper rebuilds the nested tensor with the sequence dimension always ragged, as torch builds it
when the lengths differ. Text-only (1-D) position ids are left as veRL makes them.

Not here: anything CPU-specific (``mmsr.integrations.verl.cpu``).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import torch

VERL_VERSION = "0.9.1"
"""The veRL release these fixes were written against (the ``verl`` extra pins it)."""

_PADDING = "verl.workers.utils.padding"
# modules that bind left_right_2_no_padding by name at import
_BINDERS = ("verl.trainer.ppo.ray_trainer",)


def nest_positions(rows: list[torch.Tensor]) -> torch.Tensor:
    """Each row's ``(4, L_i)`` position ids as one jagged tensor ``(B, 4, j)``, ragged on the
    sequence dimension whatever the lengths."""
    offsets = torch.zeros(len(rows) + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(torch.tensor([r.shape[-1] for r in rows]), dim=0)
    values = torch.cat(rows, dim=-1)
    return torch.nested.nested_tensor_from_jagged(values, offsets=offsets, jagged_dim=2)


def _positions_fixed(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    @functools.wraps(convert)
    def left_right_2_no_padding(data: Any) -> Any:
        positions, mask = data["position_ids"], data["attention_mask"].bool()
        three_d = positions.dim() == 3 and not positions.is_nested
        out = convert(data)
        if three_d:
            rows = [positions[i][:, mask[i]] for i in range(positions.shape[0])]
            out["position_ids"] = nest_positions(rows)
        return out

    left_right_2_no_padding.mmsr_fixed = True  # type: ignore[attr-defined]
    return left_right_2_no_padding


def install() -> None:
    """Put the fixes in place in this process (again: nothing happens)."""
    import importlib

    padding: Any = importlib.import_module(_PADDING)
    original = padding.left_right_2_no_padding
    if getattr(original, "mmsr_fixed", False):
        return
    fixed = _positions_fixed(original)
    padding.left_right_2_no_padding = fixed
    for name in _BINDERS:
        module: Any = sys.modules.get(name)
        if module is not None and hasattr(module, "left_right_2_no_padding"):
            module.left_right_2_no_padding = fixed


install()
