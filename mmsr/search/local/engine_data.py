"""What the image engine trains and is checked on: a corpus's page pictures, and for an offline
world the pictures of its *train* questions (never the test split's).

Not here: the training itself (``engine.py``).
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

from mmsr.search.local.corpus import read_corpus
from mmsr.search.local.index import load_image


def corpus_pictures(corpus: str | Path) -> tuple[list[tuple[int, Any]], list[str]]:
    """Every readable page picture as (label, RGBA image), a label per page with pictures,
    and the page ids in label order. Unreadable pictures are skipped (logged)."""
    pictures: list[tuple[int, Any]] = []
    page_ids: list[str] = []
    for page in read_corpus(corpus).pages:
        images = [image for image in map(load_image, page.pictures) if image is not None]
        if not images:
            continue
        pictures += [(len(page_ids), image.convert("RGBA")) for image in images]
        page_ids.append(page.id)
    if not pictures:
        raise ValueError(f"{corpus}: no page has a readable picture; nothing to train on")
    return pictures, page_ids


def world_validation(
    world: str | Path, page_ids: list[str], n: int, seed: int
) -> list[tuple[int, Any]]:
    """Up to ``n`` pictures of the world's *train* questions (seeded sample) as (label, RGB
    image), labelled by the page of the pictured entity."""
    import pyarrow.parquet as pq
    from PIL import Image

    path = Path(world) / "train.parquet"
    if not path.is_file():
        raise ValueError(f"{world}: no train.parquet; is it a world built by 'mmsr world build'?")
    labels = {page_id: label for label, page_id in enumerate(page_ids)}
    rows = pq.read_table(path, columns=["entity", "images"]).to_pylist()
    rows = [row for row in rows if row["entity"] in labels]
    picked = random.Random(f"{seed}:engine-validation").sample(rows, min(n, len(rows)))
    out = []
    for row in picked:
        with Image.open(io.BytesIO(row["images"][0]["bytes"])) as image:
            out.append((labels[row["entity"]], image.convert("RGB")))
    return out
