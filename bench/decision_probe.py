"""How much a checkpoint's search decision depends on the picture, read off its probabilities.

The decision probe of ``mmsr.train.decision_probe`` over a split of a built world: per
knowledge class the mean ``P(search)`` (the probability the model gives the search reply's
token where the teacher's search and direct replies part) and the share above 0.5, and the AUC
of ``P(search)`` between search-required and search-free questions: 0.5 is a decision that
ignores the picture, 1.0 one that separates them perfectly at some threshold (which RL could
then move). No labels reach the model: they only sort the figures.

With ``--linear N`` it also asks whether the representation could tell them apart at all: a
logistic regression of the class on the model's hidden states at that token, fitted on N train
questions and scored on the split's (questions whose text names the entity are left out: there
the name decides).

    python bench/decision_probe.py --model mmsr/assets/warmstart-tiny --world W --linear 900

Also printed: the AUC per kind of entity (flags and the rest) and the share of search-required
questions a threshold on P(search) could send to search while searching on at most 25 % of the
search-free ones (issue #11's bar is 85 %): what RL could reach by moving the prior alone.

Last line: JSON with ``auc`` (``auc_pictured``: without named questions, ``auc_by_kind``,
``tail_searched_at_head_fpr_0.25``), per class
``p_search``, ``share_above_half`` and ``n``, and with ``--linear`` its ``auc_train``/``auc``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from mmsr.data import load_samples  # noqa: E402
from mmsr.train.decision_probe import class_auc, decision_figures, open_probe  # noqa: E402


def fit_logistic(x: torch.Tensor, y: torch.Tensor, *, steps: int = 500, l2: float = 1e-3) -> Any:
    """A standardised L2 logistic regression of ``y`` (0/1) on ``x``; returns the scorer."""
    mu, sd = x.mean(0), x.std(0) + 1e-6
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=0.01)
    z = (x - mu) / sd
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, y)
        (loss + l2 * (w**2).sum()).backward()
        opt.step()
    return lambda v: ((v - mu) / sd @ w + b).detach()


def probe(
    model_dir: Path, world: Path, split: str, limit: int, linear_train: int = 0
) -> dict[str, Any]:
    """The figures of the module docstring; with ``linear_train`` N also a linear probe: a
    logistic regression of the knowledge class on the hidden states at the decision token,
    fitted on the first N train questions whose picture is not named in the question, scored
    on this split's such questions (can the representation tell head from tail at all?)."""
    try:
        read = open_probe(model_dir, world)
    except ValueError as err:
        raise SystemExit(str(err)) from None

    samples = load_samples(world / f"{split}.parquet")
    rows = read(samples[:limit] if limit else samples)
    out: dict[str, Any] = {"model": str(model_dir), "split": split, **decision_figures(rows)}
    pictured = [r for r in rows if not r.named]
    if linear_train and pictured:
        train = [
            r for r in read(load_samples(world / "train.parquet")[:linear_train]) if not r.named
        ]
        x = torch.stack([r.hidden for r in train])
        y = torch.tensor([1.0 if r.knowledge == "tail" else 0.0 for r in train])
        score = fit_logistic(x, y)
        test_scores = score(torch.stack([r.hidden for r in pictured])).tolist()
        out["linear"] = {
            "n_train": len(train),
            "auc_train": class_auc(score(x).tolist(), [r.knowledge for r in train]),
            "auc": class_auc(test_scores, [r.knowledge for r in pictured]),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="a saved model folder")
    ap.add_argument("--world", type=Path, required=True, help="the world folder")
    ap.add_argument("--split", default="test", choices=["train", "test"])
    ap.add_argument("--limit", type=int, default=0, help="first N questions (0: all)")
    ap.add_argument(
        "--linear", type=int, default=0, help="also a linear probe fitted on N train questions"
    )
    args = ap.parse_args(argv)
    result = probe(args.model, args.world, args.split, args.limit, args.linear)
    for name in ("head", "tail"):
        if name in result:
            r = result[name]
            print(
                f"{name}: n {r['n']}, mean P(search) {r['p_search']:.3f}, "
                f"P > 0.5 on {100 * r['share_above_half']:.1f} %"
            )
    print(
        f"AUC tail vs head: {result['auc']:.3f} ({result['auc_pictured']:.3f} where the "
        "question does not name the entity)"
    )
    kinds = ", ".join(f"{k} {v:.3f}" for k, v in result["auc_by_kind"].items())
    print(
        f"AUC by kind: {kinds}; a threshold that searches on at most 25 % of search-free "
        f"questions searches on {100 * result['tail_searched_at_head_fpr_0.25']:.1f} % of "
        "search-required ones"
    )
    if "linear" in result:
        lin = result["linear"]
        print(
            f"linear probe on the hidden states ({lin['n_train']} train questions): "
            f"AUC {lin['auc_train']:.3f} on them, {lin['auc']:.3f} on {args.split}"
        )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
