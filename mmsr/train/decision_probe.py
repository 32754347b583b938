"""Who makes the search decision: the probability a policy gives to searching, per question.

A greedy evaluation shows the decision only as all-or-nothing per question, and a prior that
moves a little flips every answer at once. The decision probe reads the probability itself:
for each world question it teacher-forces the teacher's two first replies — the opening search
(``mmsr.teacher.turns.first_search``) and the direct answer (``direct``) — under the
protocol's first turn, and takes the probability the model gives the search reply's token
where the two replies part (``P(search)``; the rest of the mass goes to the direct branch or
to other text). Its AUC between search-required (tail) and search-free (head) questions says
how much the decision depends on the picture: 0.5 is a decision that ignores it, 1.0 one that
separates the two classes perfectly at some threshold. No label reaches the model: the classes
only sort the figures.

Used by GRPO's periodic probe (``run.probe_every``: the AUC over training steps, the curve
that shows RL learning *when* to search), by warm-start checks and by
``bench/decision_probe.py``. The probe speaks the teacher's wording, so it means something for
policies taught by ``mmsr.teacher`` on a built world, and nothing for others.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mmsr.models.chat_encoder import ChatEncoder
from mmsr.protocol.prompts import PromptSet, default_prompt_set
from mmsr.protocol.render import render_first_turn
from mmsr.teacher.turns import direct, first_search, sample_question
from mmsr.train.batch import collate, teacher_sequence
from mmsr.types import Sample, Turn
from mmsr.world.entities import Entity


def auc(positives: Sequence[float], negatives: Sequence[float]) -> float:
    """P(a random positive scores above a random negative), ties counted half; NaN when a
    side is empty.

    >>> auc([0.9, 0.8], [0.1, 0.2]), auc([0.5], [0.5])
    (1.0, 0.5)
    """
    if not positives or not negatives:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def class_auc(scores: Sequence[float], labels: Sequence[str]) -> float:
    """``auc`` of the ``tail``-labelled scores against the ``head``-labelled ones."""
    tail = [s for s, k in zip(scores, labels, strict=True) if k == "tail"]
    head = [s for s, k in zip(scores, labels, strict=True) if k == "head"]
    return auc(tail, head)


def parting(a: Sequence[int], b: Sequence[int]) -> int:
    """The first index where ``a`` and ``b`` differ (the shorter length when one is a prefix).

    >>> parting([1, 2, 3], [1, 2, 4]), parting([1, 2], [1, 2, 5])
    (2, 2)
    """
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))


def tpr_at_fpr(positives: Sequence[float], negatives: Sequence[float], fpr: float) -> float:
    """The share of ``positives`` above the threshold that lets through at most ``fpr`` of
    ``negatives``: how many search-required questions a threshold on P(search) could send to
    search while searching on at most ``fpr`` of the search-free ones. The threshold is the
    largest negative score that may still be passed.

    >>> tpr_at_fpr([0.9, 0.8, 0.3], [0.1, 0.2, 0.4, 0.85], 0.25)
    0.6666666666666666
    >>> tpr_at_fpr([0.9], [0.1, 0.2], 0.0)
    1.0
    """
    if not positives or not negatives:
        return float("nan")
    ranked = sorted(negatives, reverse=True)
    allowed = int(fpr * len(ranked))  # negatives that may score above the threshold
    threshold = ranked[allowed] if allowed < len(ranked) else float("-inf")
    return sum(p > threshold for p in positives) / len(positives)


def fpr_at_tpr(positives: Sequence[float], negatives: Sequence[float], tpr: float) -> float:
    """The share of ``negatives`` at or above the highest threshold that passes at least
    ``tpr`` of ``positives``: how many search-free questions a threshold on P(search) must send
    to search to search on ``tpr`` of the search-required ones — the least search ratio on
    search-free questions any reading of this decision can reach at that recall.

    >>> fpr_at_tpr([0.9, 0.8, 0.3], [0.1, 0.2, 0.4, 0.85], 0.6)
    0.25
    >>> fpr_at_tpr([0.9, 0.8, 0.3], [0.1, 0.2, 0.4, 0.85], 1.0)
    0.5
    """
    if not positives or not negatives:
        return float("nan")
    ranked = sorted(positives, reverse=True)
    needed = max(1, math.ceil(tpr * len(ranked) - 1e-9))  # positives that must pass
    threshold = ranked[needed - 1]
    return sum(n >= threshold for n in negatives) / len(negatives)


@torch.no_grad()
def slot(
    model: Any, encoder: ChatEncoder, processor: Any, first: Turn, search: Turn, answer: Turn
) -> tuple[float, torch.Tensor]:
    """At the token where the search reply parts from the direct reply: the probability of the
    search reply's token, and the last two layers' hidden states there (concatenated)."""
    seq = teacher_sequence(encoder, [first, search])
    other = teacher_sequence(encoder, [first, answer])
    at = parting(seq.token_ids, other.token_ids)
    if at >= len(seq.token_ids) or seq.loss_mask[at] != 1:
        raise ValueError("the two replies do not part inside the assistant turn")
    batch = collate([seq], model, processor, pad_id=0)
    device = next(model.parameters()).device
    out = model(
        input_ids=batch.input_ids[:, :at].to(device),
        attention_mask=batch.attention_mask[:, :at].to(device),
        position_ids=batch.position_ids[:, :, :at].to(device),
        pixel_values=None if batch.pixel_values is None else batch.pixel_values.to(device),
        image_grid_thw=None if batch.image_grid_thw is None else batch.image_grid_thw.to(device),
        output_hidden_states=True,
    )
    p = float(torch.softmax(out.logits[0, -1].float(), dim=-1)[seq.token_ids[at]])
    return p, torch.cat([h[0, -1].float().cpu() for h in out.hidden_states[-2:]])


@dataclass(frozen=True)
class Reading:
    """One question's decision: its knowledge class, whether its text names the entity, the
    entity's kind (``flag`` or ``other``), ``P(search)`` and the hidden states at the slot."""

    knowledge: str
    named: bool
    kind: str
    p_search: float
    hidden: torch.Tensor


def read_decisions(
    model: Any,
    encoder: ChatEncoder,
    processor: Any,
    samples: Sequence[Sample],
    entities: Mapping[str, Entity],
    prompts: PromptSet | None = None,
) -> list[Reading]:
    """The ``Reading`` of each world question in ``samples`` (the model is left as it was;
    call it in eval mode)."""
    prompts = prompts or default_prompt_set()
    rows = []
    for sample in samples:
        q = sample_question(sample, entities)
        first = render_first_turn(q.text, q.image, prompts)
        p, hidden = slot(model, encoder, processor, first, first_search(q), direct(q)[0])
        kind = "flag" if q.entity.kind == "flag" else "other"
        rows.append(Reading(str(sample.extra["knowledge"]), q.named, kind, p, hidden))
    return rows


def decision_figures(rows: Sequence[Reading]) -> dict[str, Any]:
    """The probe's figures: ``auc`` (tail vs head), ``auc_pictured`` (questions whose text does
    not name the entity), ``auc_by_kind``, ``tail_searched_at_head_fpr_0.25``,
    ``head_searched_at_tail_0.90`` (the least search ratio on head questions a threshold on
    P(search) reaches while searching 90 % of tail ones) and per class ``n``, ``p_search``
    (mean) and ``share_above_half``."""
    out: dict[str, Any] = {
        "auc": class_auc([r.p_search for r in rows], [r.knowledge for r in rows])
    }
    pictured = [r for r in rows if not r.named]
    out["auc_pictured"] = class_auc([r.p_search for r in pictured], [r.knowledge for r in pictured])
    by_class: dict[str, list[float]] = {}
    for r in rows:
        by_class.setdefault(r.knowledge, []).append(r.p_search)
    out["tail_searched_at_head_fpr_0.25"] = tpr_at_fpr(
        by_class.get("tail", []), by_class.get("head", []), 0.25
    )
    out["head_searched_at_tail_0.90"] = fpr_at_tpr(
        by_class.get("tail", []), by_class.get("head", []), 0.9
    )
    kinds = sorted({r.kind for r in rows})
    out["auc_by_kind"] = {
        kind: class_auc(
            [r.p_search for r in rows if r.kind == kind],
            [r.knowledge for r in rows if r.kind == kind],
        )
        for kind in kinds
    }
    for name, values in sorted(by_class.items()):
        out[name] = {
            "n": len(values),
            "p_search": sum(values) / len(values),
            "share_above_half": sum(v > 0.5 for v in values) / len(values),
        }
    return out


def world_entities(world: str | Path) -> dict[str, Entity] | None:
    """The entities of the world built in ``world`` by id, or None when ``world`` is not a
    built world (no ``stats.json``)."""
    world = Path(world)
    if not (world / "stats.json").is_file():
        return None
    from mmsr.teacher.world_kit import world_config
    from mmsr.world.build import load_world

    return {e.id: e for e in load_world(world_config(world))[0]}


def open_probe(
    model_dir: str | Path, world: str | Path
) -> Callable[[Sequence[Sample]], list[Reading]]:
    """The saved model in ``model_dir``, loaded once, as a reader of ``read_decisions`` over
    questions of the world built in ``world``."""
    from mmsr.models.io import load_model

    entities = world_entities(world)
    if entities is None:
        raise ValueError(f"{world}: not a built world (no stats.json)")
    model: Any
    model, tokenizer, processor = load_model(Path(model_dir))
    model.eval()
    encoder = ChatEncoder(tokenizer, processor)
    return lambda samples: read_decisions(model, encoder, processor, samples, entities)


def probe_metrics(figures: Mapping[str, Any]) -> dict[str, float]:
    """``decision_figures`` flattened to metric names (``decision/auc``,
    ``decision/p_search/head`` …); NaN figures are left out (a class missing from the probe)."""
    flat = {"decision/auc": figures["auc"], "decision/auc_pictured": figures["auc_pictured"]}
    for name in ("head", "tail"):
        if name in figures:
            flat[f"decision/p_search/{name}"] = figures[name]["p_search"]
    return {k: float(v) for k, v in flat.items() if not math.isnan(float(v))}
