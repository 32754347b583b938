"""The decision probe (``mmsr.train.decision_probe``, ``bench/decision_probe.py``): P(search)
read where the two first replies part, and its AUC."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from typing import Any

import pytest
import tiny_models
import torch

from mmsr.models import build_tiny_model
from mmsr.models.chat_encoder import ChatEncoder
from mmsr.models.io import save_pretrained
from mmsr.train.batch import collate, teacher_sequence, token_logprobs
from mmsr.train.decision_probe import auc, class_auc, fpr_at_tpr, parting, slot, tpr_at_fpr
from mmsr.types import Role, Turn

BENCH = Path(__file__).resolve().parents[1] / "bench" / "decision_probe.py"


def _bench() -> Any:
    spec = importlib.util.spec_from_file_location("decision_probe", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["decision_probe"] = module
    spec.loader.exec_module(module)
    return module


def test_auc_and_parting() -> None:
    assert auc([0.9, 0.2], [0.1, 0.5]) == 0.75
    assert math.isnan(auc([], [0.1]))
    assert parting([5, 6, 7], [5, 6, 8, 9]) == 2


def test_p_search_is_the_search_token_probability_of_a_full_forward() -> None:
    tok = tiny_models.tokenizer()
    processor = tiny_models.image_processor("micro")
    model = build_tiny_model("micro", tok, seed=3).eval()
    encoder = ChatEncoder(tok, processor)
    first = Turn(Role.USER, "<image>Question: what is it?", (tiny_models.image(),))
    search = Turn(Role.ASSISTANT, "<reason>The image shows nothing I know.</reason>")
    answer = Turn(Role.ASSISTANT, "<reason>The image shows Peru.</reason><answer>Peru</answer>")
    p = slot(model, encoder, processor, first, search, answer)[0]
    seq = teacher_sequence(encoder, [first, search])
    at = parting(seq.token_ids, teacher_sequence(encoder, [first, answer]).token_ids)
    batch = collate([seq], model, processor, pad_id=0)
    with torch.no_grad():
        full = token_logprobs(model, batch)  # (1, T-1): log P(token t+1 | ..t)
    assert p == pytest.approx(math.exp(float(full[0, at - 1])), rel=1e-4)
    assert 0.0 < p < 1.0


def test_probe_over_a_small_world(small_world: tuple[Path, Path], tmp_path: Path) -> None:
    bench = _bench()
    tok = tiny_models.tokenizer()
    model = build_tiny_model("micro", tok, seed=0).eval()
    folder = save_pretrained(model, tok, tiny_models.image_processor("micro"), tmp_path / "m")
    out = bench.probe(folder, small_world[0], "test", 6, linear_train=12)
    assert sum(out[k]["n"] for k in ("head", "tail") if k in out) == 6
    for name in ("head", "tail"):
        if name in out:
            assert 0.0 <= out[name]["p_search"] <= 1.0
    if "linear" in out:  # the small world's first train questions may all name their entity
        assert out["linear"]["n_train"] > 0


def test_linear_probe_separates_what_is_separable() -> None:
    bench = _bench()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 8, generator=gen)
    y = (x[:, 3] > 0).float()
    score = bench.fit_logistic(x, y)
    held = torch.randn(100, 8, generator=gen)
    labels = ["tail" if v > 0 else "head" for v in held[:, 3].tolist()]
    assert class_auc(score(held).tolist(), labels) > 0.95
    noise = ["tail" if v > 0 else "head" for v in torch.randn(100, generator=gen).tolist()]
    assert class_auc(score(held).tolist(), noise) < 0.7


def test_tpr_at_fpr_is_the_best_threshold_within_the_allowance() -> None:
    head = [0.1, 0.2, 0.3, 0.9]  # one of four head questions scores high
    tail = [0.95, 0.5, 0.25, 0.05]
    assert tpr_at_fpr(tail, head, 0.25) == 0.5  # threshold 0.3: 0.95 and 0.5 pass
    assert tpr_at_fpr(tail, head, 0.0) == 0.25  # threshold 0.9: only 0.95
    assert tpr_at_fpr(tail, head, 1.0) == 1.0
    assert math.isnan(tpr_at_fpr([], head, 0.25))


def test_fpr_at_tpr_is_the_least_head_search_at_the_asked_tail_search() -> None:
    head = [0.1, 0.2, 0.3, 0.9]
    tail = [0.95, 0.5, 0.25, 0.05]
    assert fpr_at_tpr(tail, head, 0.5) == 0.25  # threshold 0.5: only head's 0.9 passes too
    assert fpr_at_tpr(tail, head, 0.75) == 0.5  # threshold 0.25: 0.3 and 0.9
    assert fpr_at_tpr(tail, head, 0.9) == 1.0  # every tail question: threshold 0.05
    assert fpr_at_tpr([0.9, 0.8], [0.1, 0.2], 0.9) == 0.0  # separable: no head search needed
    assert math.isnan(fpr_at_tpr(tail, [], 0.9))
