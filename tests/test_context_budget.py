"""The tiny GRPO preset's token budget holds the longest legal rollout (bench/context_budget.py).

Below it, a rollout that searched both ways ends ``context_full`` with reward 0: measured in
the demo's GRPO with a 1,024-token budget, 0–22 % of each step's rollouts, most of them
searches, so the budget itself taught RL not to search.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

from mmsr.assets import WARMSTART_TINY
from mmsr.models.chat_encoder import ChatEncoder
from mmsr.models.io import load_tokenizer_and_processor
from mmsr.train.grpo_config import load_grpo_config

BENCH = Path(__file__).resolve().parents[1] / "bench" / "context_budget.py"


def _bench() -> Any:
    spec = importlib.util.spec_from_file_location("context_budget", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["context_budget"] = module
    spec.loader.exec_module(module)
    return module


def test_the_longest_legal_rollout_fits_the_tiny_budget(kit: Any) -> None:
    cfg = load_grpo_config("tiny-cpu").limits
    encoder = ChatEncoder(*load_tokenizer_and_processor(WARMSTART_TINY))
    totals = _bench().longest_rollouts(
        kit, encoder, image_k=cfg.image_k, text_k=cfg.text_k, max_new_tokens=cfg.max_new_tokens
    )
    assert len(totals) == len(kit.train)
    assert max(totals) <= cfg.max_total_tokens
    # and the measure is not vacuous: the old budget did not hold these rollouts
    assert max(totals) > 1024
