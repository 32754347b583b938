"""The local search on an offline world's own questions: ``search_bench.py --world W``.

Image search: the pictured entity's rank among the hits for every *test* question picture,
clean and under a strong perturbation of our own (crop, rotation with a filled frame,
brightness / contrast / saturation, blur, shrink, JPEG), for three image models built over the
same corpus in the same run — ``efficientnet-color`` over the web's Twemoji pictures alone (the
engine before the image engine), the same with the corpus's second drawings, and the image
engine — so each gain is a ratio from one run; plus each index's build time and the image
search's p50 latency. Text search: for every fact question, whether a text search for
"<entity name> <fact word>" (the teacher's query) returns the fact's value in the hits'
summaries (any of the top 5, the first).

    .venv/bin/python bench/search_bench.py --world W            # W from 'mmsr world build'
    .venv/bin/python bench/search_bench.py --world W --engine DIR --models engine
"""

from __future__ import annotations

import io
import json
import logging
import random
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from PIL import Image, ImageEnhance, ImageFilter

logger = logging.getLogger("search_bench")

MODELS = ("efficientnet-color-twemoji", "efficientnet-color", "engine")


def perturb(image: Image.Image, rng: random.Random) -> Image.Image:
    """A strongly changed copy: crop 70-90 %, rotation ±25° with a filled frame, brightness
    and contrast ×0.7-1.3, saturation ×0.6-1.4, blur σ 0.5-2, shrink to 96-200 px, JPEG
    quality 25-50. Our own perturbation, not the engine's training views."""
    img = image.convert("RGB")
    w, h = img.size
    frac = rng.uniform(0.7, 0.9)
    cw, ch = int(w * frac), int(h * frac)
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    img = img.crop((x, y, x + cw, y + ch))
    fill = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
    img = img.rotate(rng.uniform(-25, 25), Image.Resampling.BILINEAR, expand=True, fillcolor=fill)
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.7, 1.3))
    img = ImageEnhance.Contrast(img).enhance(rng.uniform(0.7, 1.3))
    img = ImageEnhance.Color(img).enhance(rng.uniform(0.6, 1.4))
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2.0)))
    side = rng.randint(96, 200)
    img = img.resize((side, side), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=rng.randint(25, 50))
    with Image.open(io.BytesIO(buf.getvalue())) as decoded:
        return decoded.convert("RGB")


def test_pictures(world: Path) -> list[tuple[str, Image.Image]]:
    """(entity id, picture) of every test question."""
    import pyarrow.parquet as pq

    rows = pq.read_table(world / "test.parquet", columns=["entity", "images"]).to_pylist()
    out = []
    for row in rows:
        with Image.open(io.BytesIO(row["images"][0]["bytes"])) as image:
            out.append((row["entity"], image.convert("RGB")))
    return out


def twemoji_only_corpus(corpus: Path, out: Path) -> Path:
    """A copy of ``corpus`` whose pages keep their own picture only (no ``more_images``)."""
    if out.is_symlink() or out.is_file():
        out.unlink()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    with (corpus / "pages.jsonl").open(encoding="utf-8") as src:
        rows = [json.loads(line) for line in src if line.strip()]
    with (out / "pages.jsonl").open("w", encoding="utf-8") as dst:
        for row in rows:
            row.pop("more_images", None)
            dst.write(json.dumps(row, ensure_ascii=False) + "\n")
    (out / "images").mkdir(exist_ok=True)  # a copy: a corpus refuses links out of itself
    for row in rows:
        if "image" in row:
            shutil.copyfile(corpus / row["image"], out / row["image"])
    return out


def image_figures(
    index: Path, pictures: list[tuple[str, Image.Image]], seed: int
) -> dict[str, Any]:
    from mmsr.search.local.search import LocalImageSearch

    search = LocalImageSearch(index)
    url_of = {row["id"]: row["url"] for row in search.rows}
    search.search(pictures[0][1], 5)  # load the model outside the timing
    out: dict[str, Any] = {}
    rng = random.Random(f"{seed}:perturb")
    perturbed = [(entity, perturb(image, rng)) for entity, image in pictures]
    for name, queries in (("clean", pictures), ("perturbed", perturbed)):
        ranks, latencies = [], []
        for entity, image in queries:
            t0 = time.perf_counter()
            urls = [hit.url for hit in search.search(image, 5)]
            latencies.append(time.perf_counter() - t0)
            url = url_of.get(entity)
            ranks.append(urls.index(url) if url in urls else None)
        out[name] = {
            "rank1": round(sum(r == 0 for r in ranks) / len(ranks), 4),
            "top5": round(sum(r is not None for r in ranks) / len(ranks), 4),
            "p50_ms": round(1000 * statistics.median(latencies), 1),
        }
    return out


def text_figures(world: Path, index: Path) -> dict[str, Any]:
    """Whether "<name> <fact word>" finds the fact's value in the summaries, in the first hit,
    and in the first hit's first sentence (where a relevance-ordered summary puts it), per
    fact."""
    import pyarrow.parquet as pq

    from mmsr.search.local.search import LocalTextSearch
    from mmsr.search.local.summary import split_sentences
    from mmsr.teacher.turns import FACT_WORDS
    from mmsr.world.questions import TEMPLATES

    templates = {t.id: t for t in TEMPLATES}
    with (world / "entities.jsonl").open(encoding="utf-8") as handle:
        entities = {e["id"]: e for e in map(json.loads, filter(str.strip, handle))}
    search = LocalTextSearch(index)
    rows = pq.read_table(world / "test.parquet").to_pylist()
    per: dict[str, dict[str, int]] = {}
    latencies = []
    for row in rows:
        template = templates[row["question_type"]]
        if template.fact is None:
            continue
        entity = entities[row["entity"]]
        question = row["prompt"][0]["content"]
        value = row["reward_model"]["ground_truth"].lower()
        t0 = time.perf_counter()
        hits = search.search(f"{entity['name']} {FACT_WORDS[template.fact]}", 5, question=question)
        latencies.append(time.perf_counter() - t0)
        counts = per.setdefault(
            template.fact, {"n": 0, "in_hits": 0, "in_first": 0, "in_first_sentence": 0}
        )
        counts["n"] += 1
        counts["in_hits"] += any(value in hit.summary.lower() for hit in hits)
        counts["in_first"] += bool(hits) and value in hits[0].summary.lower()
        lead = split_sentences(hits[0].summary)[:1] if hits else []
        counts["in_first_sentence"] += bool(lead) and value in lead[0].lower()
    n = sum(c["n"] for c in per.values())
    return {
        "questions": n,
        "value_in_hits": round(sum(c["in_hits"] for c in per.values()) / max(n, 1), 4),
        "value_in_first_hit": round(sum(c["in_first"] for c in per.values()) / max(n, 1), 4),
        "value_in_first_sentence": round(
            sum(c["in_first_sentence"] for c in per.values()) / max(n, 1), 4
        ),
        "p50_ms": round(1000 * statistics.median(latencies), 2) if latencies else None,
        "per_fact": per,
    }


def run_world(
    world: Path,
    work: Path,
    engine: str | None,
    models: list[str],
    seed: int,
    threads: int | None,
    summary_order: str = "page",
) -> dict[str, Any]:
    from mmsr.search.local.cli import engine_folder
    from mmsr.search.local.index import build_index

    pictures = test_pictures(world)
    logger.info("%d test question pictures", len(pictures))
    figures: dict[str, Any] = {"world": str(world), "test_pictures": len(pictures), "image": {}}
    built: dict[str, Path] = {}
    for model in models:
        corpus = world / "corpus"
        if model == "efficientnet-color-twemoji":
            corpus = twemoji_only_corpus(corpus, work / "corpus-twemoji")
        folder = engine_folder(engine or "packaged") if model == "engine" else None
        index = work / f"index-{model}"
        start = time.perf_counter()
        manifest = build_index(
            corpus,
            index,
            progress=True,
            threads=threads,
            engine=folder,
            summary_order=summary_order,
        )
        build_s = round(time.perf_counter() - start, 1)
        built[model] = index
        row = {"build_s": build_s, "images": manifest.images, "features": manifest.features}
        row |= image_figures(index, pictures, seed)
        figures["image"][model] = row
        logger.info("%s: %s", model, row)
    base = figures["image"].get("efficientnet-color-twemoji")
    best = figures["image"].get("engine")
    if base and best and base["clean"]["rank1"]:
        figures["image"]["engine_vs_twemoji_rank1"] = round(
            best["clean"]["rank1"] / base["clean"]["rank1"], 2
        )
    figures["text"] = text_figures(world, next(iter(built.values())))
    logger.info("text: %s", figures["text"])
    shutil.rmtree(work / "corpus-twemoji", ignore_errors=True)
    return figures
