"""Can head pictures be told from tail pictures at all, with the image index's pretrained features?

The reference for ``bench/decision_probe.py``: the same question (is this test picture's entity
one the policy was taught?) asked of the local index's features (EfficientNet-lite0 + colour
histogram, ``mmsr.search.local``) of the world's query pictures instead of a policy's hidden
states. Two read-outs, both fitted on the train split's pictures and scored on the test split's
(questions whose text names the entity are left out):

- linear: a logistic regression of head/tail on the features (``decision_probe.fit_logistic``);
- nearest neighbours: the share of tail pictures among the k most similar train pictures
  (cosine on the CNN features) — i.e. recognise the entity, then look up what is known of it.

Head/tail is an arbitrary split of the entities, so a linear direction cannot carry it while
recognition can: a policy's decision needs the second kind of read-out.

    python bench/picture_separability.py --world W

Last line: JSON with ``linear_auc``, ``knn`` (k → AUC, accuracy) and the counts.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from decision_probe import class_auc, fit_logistic  # noqa: E402

from mmsr.data import load_samples, open_image  # noqa: E402
from mmsr.search.local.colors import color_histogram  # noqa: E402
from mmsr.search.local.features import ImageEncoder  # noqa: E402
from mmsr.world.questions import TEMPLATES  # noqa: E402


def pictures(
    world: Path, split: str, limit: int = 0, *, file: Path | None = None
) -> tuple[list[Any], list[str]]:
    """The split's query pictures whose question does not name the entity, and their classes
    (``file``: those of another parquet file of the world's questions instead)."""
    named = {t.id: t.named for t in TEMPLATES}
    samples = load_samples(file if file is not None else world / f"{split}.parquet")
    samples = [s for s in (samples[:limit] if limit else samples) if s.image is not None]
    kept = [s for s in samples if not named[str(s.extra["question_type"])]]
    return [open_image(s.image) for s in kept], [str(s.extra["knowledge"]) for s in kept]


def features(encoder: ImageEncoder, images: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """(CNN features (N, 1280), colour histograms (N, C)) of ``images``."""
    cnn = np.concatenate(
        [encoder.encode(list(images[i : i + 32])) for i in range(0, len(images), 32)]
    )
    colors = np.stack([color_histogram(im) for im in images])
    return torch.tensor(cnn, dtype=torch.float32), torch.tensor(colors, dtype=torch.float32)


def knn_tail_share(
    train: torch.Tensor, test: torch.Tensor, labels: Sequence[str], k: int
) -> list[float]:
    """Per test row, the share of ``tail`` among its k nearest train rows (cosine)."""
    a = torch.nn.functional.normalize(train, dim=1)
    b = torch.nn.functional.normalize(test, dim=1)
    nearest = (b @ a.T).topk(min(k, len(labels)), dim=1).indices
    return [sum(labels[j] == "tail" for j in row) / len(row) for row in nearest.tolist()]


def separability(
    world: Path, *, train_limit: int = 0, ks: Sequence[int] = (1, 5)
) -> dict[str, Any]:
    encoder = ImageEncoder()
    train_images, train_y = pictures(world, "train", train_limit)
    test_images, test_y = pictures(world, "test")
    cnn_tr, col_tr = features(encoder, train_images)
    cnn_te, col_te = features(encoder, test_images)
    target = torch.tensor([1.0 if y == "tail" else 0.0 for y in train_y])
    score = fit_logistic(torch.cat([cnn_tr, col_tr], 1), target, l2=1e-2)
    out: dict[str, Any] = {
        "n_train": len(train_y),
        "n_test": len(test_y),
        "linear_auc_train": class_auc(score(torch.cat([cnn_tr, col_tr], 1)).tolist(), train_y),
        "linear_auc": class_auc(score(torch.cat([cnn_te, col_te], 1)).tolist(), test_y),
        "knn": {},
    }
    for k in ks:
        share = knn_tail_share(cnn_tr, cnn_te, train_y, k)
        right = sum((s > 0.5) == (y == "tail") for s, y in zip(share, test_y, strict=True))
        out["knn"][str(k)] = {"auc": class_auc(share, test_y), "accuracy": right / len(test_y)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--world", type=Path, required=True, help="the world folder")
    args = ap.parse_args(argv)
    out = separability(args.world)
    print(
        f"linear read-out: AUC {out['linear_auc_train']:.3f} on {out['n_train']} train pictures, "
        f"{out['linear_auc']:.3f} on {out['n_test']} test pictures"
    )
    for k, r in out["knn"].items():
        print(
            f"{k}-nearest train pictures: AUC {r['auc']:.3f}, accuracy {100 * r['accuracy']:.1f} %"
        )
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
