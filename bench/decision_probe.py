"""How much a checkpoint's search decision depends on the picture, read off its probabilities.

A greedy evaluation shows the decision only as all-or-nothing per question, and a prior that
moves a little flips every answer at once (measured in SFT runs: 0 % → 100 % → 0 % searches on
both need classes within 36 minutes). This probe reads the probability itself: for each
question it teacher-forces the warm start's own two first replies — the opening search
(``mmsr.train.turns.first_search``) and the direct answer (``direct``) — under the protocol's
first turn, and takes the probability the model gives the search reply's token at the point
where the two replies part (``P(search)``; the remaining mass goes to the direct branch or to
other text). Per knowledge class it prints the mean ``P(search)`` and the share above 0.5,
and the AUC of ``P(search)`` between search-required and search-free questions: 0.5 is a
decision that ignores the picture, 1.0 one that separates them perfectly at some threshold
(which RL could then move). No labels reach the model: they only sort the figures.

    python bench/decision_probe.py --model mmsr/assets/warmstart-tiny --world W --index IDX

Last line: JSON with ``auc``, per class ``p_search`` and ``share_above_half``, ``n``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from mmsr.data import load_samples, open_image  # noqa: E402
from mmsr.models.chat import ChatEncoder  # noqa: E402
from mmsr.models.io import load_model  # noqa: E402
from mmsr.protocol.prompts import default_prompt_set  # noqa: E402
from mmsr.protocol.render import render_first_turn  # noqa: E402
from mmsr.train.batch import collate, teacher_sequence  # noqa: E402
from mmsr.train.turns import Question, direct, first_search  # noqa: E402
from mmsr.types import Sample, Turn  # noqa: E402
from mmsr.world.entities import Entity  # noqa: E402
from mmsr.world.questions import TEMPLATES  # noqa: E402


def auc(positives: Sequence[float], negatives: Sequence[float]) -> float:
    """P(a random positive scores above a random negative), ties counted half.

    >>> auc([0.9, 0.8], [0.1, 0.2]), auc([0.5], [0.5])
    (1.0, 0.5)
    """
    if not positives or not negatives:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def parting(a: Sequence[int], b: Sequence[int]) -> int:
    """The first index where ``a`` and ``b`` differ (the shorter length when one is a prefix).

    >>> parting([1, 2, 3], [1, 2, 4]), parting([1, 2], [1, 2, 5])
    (2, 2)
    """
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))


def question_of(sample: Sample, entities: dict[str, Entity]) -> Question:
    entity = entities[str(sample.extra["entity"])]
    template = next(t for t in TEMPLATES if t.id == sample.extra["question_type"])
    assert sample.image is not None, f"{sample.id} has no image"
    return Question(
        entity, template.fact, template.named, sample.question, open_image(sample.image)
    )


@torch.no_grad()
def p_search(
    model: Any, encoder: ChatEncoder, processor: Any, first: Turn, search: Turn, answer: Turn
) -> float:
    """The probability of the search reply's token where it parts from the direct reply."""
    seq = teacher_sequence(encoder, [first, search])
    other = teacher_sequence(encoder, [first, answer])
    at = parting(seq.token_ids, other.token_ids)
    if at >= len(seq.token_ids) or seq.loss_mask[at] != 1:
        raise ValueError("the two replies do not part inside the assistant turn")
    batch = collate([seq], model, processor, pad_id=0)
    logits = model(
        input_ids=batch.input_ids[:, :at],
        attention_mask=batch.attention_mask[:, :at],
        position_ids=batch.position_ids[:, :, :at],
        pixel_values=batch.pixel_values,
        image_grid_thw=batch.image_grid_thw,
    ).logits[0, -1]
    return float(torch.softmax(logits.float(), dim=-1)[seq.token_ids[at]])


def probe(model_dir: Path, world: Path, split: str, limit: int) -> dict[str, Any]:
    from mmsr.world.build import BuildConfig, load_world

    stats = json.loads((world / "stats.json").read_text(encoding="utf-8"))
    config = BuildConfig(out=world, seed=int(stats["seed"]), small=bool(stats["small"]))
    entities = {e.id: e for e in load_world(config)[0]}
    model, tokenizer, processor = load_model(model_dir)
    model.eval()
    encoder = ChatEncoder(tokenizer, processor)
    prompts = default_prompt_set()
    samples = load_samples(world / f"{split}.parquet")
    if limit:
        samples = samples[:limit]
    by_class: dict[str, list[float]] = {}
    for sample in samples:
        q = question_of(sample, entities)
        first = render_first_turn(q.text, q.image, prompts)
        p = p_search(model, encoder, processor, first, first_search(q), direct(q)[0])
        by_class.setdefault(str(sample.extra["knowledge"]), []).append(p)
    head, tail = by_class.get("head", []), by_class.get("tail", [])
    out: dict[str, Any] = {"model": str(model_dir), "split": split, "auc": auc(tail, head)}
    for name, values in sorted(by_class.items()):
        out[name] = {
            "n": len(values),
            "p_search": sum(values) / len(values),
            "share_above_half": sum(v > 0.5 for v in values) / len(values),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="a saved model folder")
    ap.add_argument("--world", type=Path, required=True, help="the world folder")
    ap.add_argument("--split", default="test", choices=["train", "test"])
    ap.add_argument("--limit", type=int, default=0, help="first N questions (0: all)")
    args = ap.parse_args(argv)
    result = probe(args.model, args.world, args.split, args.limit)
    for name in ("head", "tail"):
        if name in result:
            r = result[name]
            print(
                f"{name}: n {r['n']}, mean P(search) {r['p_search']:.3f}, "
                f"P > 0.5 on {100 * r['share_above_half']:.1f} %"
            )
    print(f"AUC tail vs head: {result['auc']:.3f}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
