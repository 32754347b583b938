"""Does a model's vision tower tell head pictures from tail ones? A trained read-out says.

``bench/decision_probe.py`` reads the policy's own decision; ``bench/picture_separability.py``
asks the image index's features with read-outs fitted on the few train-question pictures.
This probe asks the question of a model's vision tower with as much data as the decision drills
get: a small MLP (one hidden layer) is fitted, on the head/tail label, to the tower's merged
tokens (all of them, as the language model receives them) of N fresh query-style pictures of
the world's entities (keys ``probe:<i>``, never a question's image), and scored on the test
split's question pictures (questions whose text names the entity left out; ``--questions FILE``:
those of another question file instead, e.g. a warm-start recipe's held-out train questions in
``STAGES/checks/validation.parquet``, so a recipe is judged without the test split). An AUC near 1
means the recognition the decision needs is in the features; near 0.5, that it is not.
``--index-features`` runs the same read-out over the index's EfficientNet-Lite0 features as a
reference (slow: ≈ 0.05–0.1 s a picture on 2 cores).

    python bench/vision_probe.py --model mmsr/assets/warmstart-tiny --world W --index IDX

Measured on the demo's world (seed 7): with 6,000 pictures, warm start K's tower (flattened
tokens) AUC 0.69 (1.00 on its own fitting pictures) and EfficientNet-Lite0 0.96; with 4,000
pictures and ``--pool mean``, K 0.61 and K after 30 minutes of ``mmsr train vision`` 0.84 (its
flattened tokens: 0.68, the MLP over 4,096 inputs overfits 4,000 pictures). Last line: JSON
with ``auc`` and ``n``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from decision_probe import class_auc  # noqa: E402
from picture_separability import pictures  # noqa: E402

from mmsr.models.io import load_model  # noqa: E402
from mmsr.models.vision_batch import image_features  # noqa: E402
from mmsr.teacher.world_kit import WorldKit  # noqa: E402


def tower_features(model_dir: Path, pool: str = "flat") -> Callable[[Sequence[Any]], torch.Tensor]:
    """Images → the tower's merged tokens, flattened (N, tokens × width), or their mean
    (``pool="mean"``: the read-out ``mmsr train vision`` trains the tower for)."""
    model, _, processor = load_model(model_dir)
    model.eval()

    @torch.no_grad()
    def encode(images: Sequence[Any]) -> torch.Tensor:
        processed = [processor(image) for image in images]
        pixels = torch.cat([p.pixel_values for p in processed])
        grid = torch.tensor([p.grid_thw for p in processed])
        merged = image_features(model.model.visual, pixels, grid).float()
        return merged.mean(dim=1) if pool == "mean" else merged.flatten(1)

    return encode


def index_features() -> Callable[[Sequence[Any]], torch.Tensor]:
    from mmsr.search.local.features import ImageEncoder

    encoder = ImageEncoder()
    return lambda images: torch.tensor(encoder.encode(list(images)))


def fit_mlp(
    x: torch.Tensor, y: torch.Tensor, *, hidden: int = 512, steps: int = 1500, seed: int = 0
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A standardised one-hidden-layer MLP of ``y`` (0/1) on ``x``; returns the scorer."""
    torch.manual_seed(seed)
    mu, sd = x.mean(0), x.std(0) + 1e-6
    net = torch.nn.Sequential(
        torch.nn.Linear(x.shape[1], hidden), torch.nn.GELU(), torch.nn.Linear(hidden, 1)
    )
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-2)
    z = (x - mu) / sd
    for _ in range(steps):
        rows = torch.randint(0, len(z), (256,))
        opt.zero_grad()
        logits = net(z[rows]).squeeze(-1)
        torch.nn.functional.binary_cross_entropy_with_logits(logits, y[rows]).backward()
        opt.step()

    def score(v: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            out: torch.Tensor = net((v - mu) / sd).squeeze(-1)
        return out

    return score


def probe(
    encode: Callable[[Sequence[Any]], torch.Tensor],
    world: Path,
    index: Path,
    n: int,
    *,
    seed: int = 0,
    batch: int = 64,
    questions: Path | None = None,
) -> dict[str, Any]:
    kit = WorldKit.open(world, index)
    rng = random.Random(f"probe:{seed}")
    drawn = [rng.choice(kit.entities) for _ in range(n)]
    labels = [e.knowledge for e in drawn]

    def run(images: Sequence[Any]) -> torch.Tensor:
        return torch.cat([encode(images[i : i + batch]) for i in range(0, len(images), batch)])

    fit_x = run([kit.query_image(e, f"probe:{i}") for i, e in enumerate(drawn)])
    test_images, test_y = pictures(world, "test", file=questions)
    test_x = run(test_images)
    score = fit_mlp(fit_x, torch.tensor([1.0 if k == "tail" else 0.0 for k in labels]))
    return {
        "n": n,
        "n_test": len(test_y),
        "auc_fit": class_auc(score(fit_x).tolist(), labels),
        "auc": class_auc(score(test_x).tolist(), test_y),
        "scored_on": str(questions) if questions is not None else "test",
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", type=Path, help="a saved model folder (its vision tower)")
    ap.add_argument("--index-features", action="store_true", help="the index's features instead")
    ap.add_argument("--world", type=Path, required=True, help="the world folder")
    ap.add_argument("--index", type=Path, required=True, help="its local index")
    ap.add_argument("--pictures", type=int, default=6000, help="fresh pictures to fit on")
    ap.add_argument(
        "--pool", choices=["flat", "mean"], default="flat", help="the tower's tokens, or their mean"
    )
    ap.add_argument(
        "--questions",
        type=Path,
        help="score on this parquet file's question pictures (default: the world's test split)",
    )
    args = ap.parse_args(argv)
    if (args.model is None) == (not args.index_features):
        ap.error("give --model DIR or --index-features")
    encode = index_features() if args.index_features else tower_features(args.model, args.pool)
    out = probe(encode, args.world, args.index, args.pictures, questions=args.questions)
    out["features"] = "index" if args.index_features else f"{args.model} ({args.pool})"
    print(
        f"head/tail read-out: AUC {out['auc_fit']:.3f} on its {out['n']} fitting pictures, "
        f"{out['auc']:.3f} on {out['n_test']} pictures of {out['scored_on']}"
    )
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
