"""Build a local search index from a corpus folder: tantivy BM25 text + image features.

Layout of an index folder::

    manifest.json   counts, corpus digest, image model, feature and format versions
    text/           tantivy index (fields: page, title, url, text; English stemming)
    images.npy      one unit-length row per page picture: the image engine's embedding
                    (``engine.py``), or with ``image_model="efficientnet-color"`` the
                    pretrained EfficientNet-Lite0 features (N, 1280)
    colors.npy      (N, 1728) float16 colour histograms of the same pictures (``colors.py``;
                    the efficientnet-color model's second term)
    images.jsonl    one {"id", "title", "url", "thumbnail"} per row; a page with several
                    pictures (``more_images``) has several rows, one thumbnail (its own image)
    thumbs/         PNG thumbnails (≤ THUMB_SIZE px) returned with image hits
    engine/         the image engine the rows were embedded with (engine model only)

The index is written to a temporary sibling folder and moved into place at the end, so an
interrupted build never leaves a half-written index. Pages are indexed in corpus order with
one writer thread and features computed in fixed batches, so rebuilding from the same corpus
gives the same features and the same search results. Corrupt or missing images are logged,
counted and skipped; the page stays in the text index. Not here: searching (``search.py``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmsr.search.local.corpus import Page, read_corpus
from mmsr.search.local.summary import SUMMARY_ORDERS

logger = logging.getLogger(__name__)

FORMAT_VERSION = 3  # 2: colors.npy beside the features; 3: image_model, engine/, more_images
READABLE_FORMATS = (2, 3)
FEATURES = "efficientnet-lite0/224/avgpool/l2+rgb12-histogram"
IMAGE_MODELS = ("engine", "efficientnet-color")
"""``engine``: a trained image engine (``engine.py``); ``efficientnet-color``: pretrained
EfficientNet-Lite0 features plus colour histograms, for any corpus, no training."""
THUMB_SIZE = 128
# Small batches: on a few CPU cores larger ones were slower (measured: 60 img/s at 1-4,
# 14 img/s at 32, one thread), and a fixed size keeps rebuilds bit-identical.
BATCH_SIZE = 4
TEXT_FIELDS = ("title", "text")


@dataclass(frozen=True)
class IndexManifest:
    """What ``manifest.json`` records about a built index."""

    format: int
    """Index layout version."""
    features: str
    """How image features were computed."""
    corpus_sha256: str
    """Digest of ``pages.jsonl``: two builds of the same corpus have the same one."""
    pages: int
    """Pages in the text index."""
    images: int
    """Rows of the image index."""
    bad_images: int
    """Images that could not be read and were skipped."""
    skipped_rows: int
    """Corpus rows skipped as bad (only with ``skip_bad``)."""
    image_model: str = "efficientnet-color"
    """One of ``IMAGE_MODELS`` (format 2 indexes are ``efficientnet-color``)."""
    summary_order: str = "page"
    """How text hits' summaries order the page's sentences (``summary.SUMMARY_ORDERS``):
    ``page`` as the page has them, ``relevance`` the sentence that answers the query first."""


def build_index(
    corpus: str | Path,
    out: str | Path,
    *,
    skip_bad: bool = False,
    progress: bool = False,
    threads: int | None = None,
    engine: str | Path | None = None,
    summary_order: str = "page",
) -> IndexManifest:
    """Index the corpus folder ``corpus`` into ``out`` (replaced if it exists).

    ``engine``: an image engine folder (``mmsr index train-engine``; ``mmsr.assets.IMAGE_ENGINE``
    is the one trained on the offline world's pictures) — the image rows are its embeddings and
    the engine is copied into the index. None: pretrained EfficientNet features plus colour
    histograms (``efficientnet-color``). ``threads`` sets torch's CPU threads for the image
    features (default: torch's choice). ``summary_order``: see ``IndexManifest``.
    """
    if summary_order not in SUMMARY_ORDERS:
        raise ValueError(f"summary_order must be one of {SUMMARY_ORDERS}, got {summary_order!r}")
    corpus_dir, out_dir = Path(corpus), Path(out)
    pages = read_corpus(corpus_dir, skip_bad=skip_bad)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        _build_text(pages.pages, tmp / "text")
        if engine is not None:
            from mmsr.search.local.engine import read_info

            read_info(engine)  # a clear error before any work
            shutil.copytree(engine, tmp / "engine", ignore=shutil.ignore_patterns("checkpoint*"))
        images, bad = _build_images(pages.pages, tmp, progress=progress, threads=threads)
        manifest = IndexManifest(
            format=FORMAT_VERSION,
            features=_features_name(tmp),
            corpus_sha256=file_sha256(corpus_dir / "pages.jsonl"),
            pages=len(pages.pages),
            images=images,
            bad_images=bad,
            skipped_rows=pages.skipped,
            image_model="engine" if engine is not None else "efficientnet-color",
            summary_order=summary_order,
        )
        (tmp / "manifest.json").write_text(json.dumps(asdict(manifest), indent=2) + "\n")
        _replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("indexed %d pages and %d images into %s", manifest.pages, images, out_dir)
    return manifest


def read_manifest(index: str | Path) -> IndexManifest:
    path = Path(index) / "manifest.json"
    if not path.is_file():
        raise ValueError(f"{index}: not a search index (no manifest.json); build one first")
    try:
        manifest = IndexManifest(**json.loads(path.read_text()))
    except (TypeError, json.JSONDecodeError) as err:
        raise ValueError(f"{index}: unreadable manifest.json ({err}); rebuild the index") from err
    if manifest.summary_order not in SUMMARY_ORDERS:
        raise ValueError(f"{index}: unknown summary_order {manifest.summary_order!r}")
    if manifest.format not in READABLE_FORMATS or manifest.image_model not in IMAGE_MODELS:
        raise ValueError(
            f"{index}: index format {manifest.format} ({manifest.image_model}), expected "
            f"{FORMAT_VERSION}; rebuild it with 'mmsr index build'"
        )
    return manifest


def _features_name(folder: Path) -> str:
    """What the image rows are: the engine's identity, or the pretrained features' name."""
    if not (folder / "engine").is_dir():
        return FEATURES
    from mmsr.search.local.engine import read_info

    info = read_info(folder / "engine")
    return f"engine/{info.side}/{info.embed_dim}/{info.digest[:16]}"


def _build_text(pages: tuple[Page, ...], folder: Path) -> None:
    import tantivy

    folder.mkdir()
    schema = text_schema()
    index = tantivy.Index(schema, path=str(folder))
    # One thread keeps documents in corpus order in one segment: deterministic ties.
    writer = index.writer(heap_size=64_000_000, num_threads=1)
    for row, page in enumerate(pages):
        writer.add_document(
            tantivy.Document(row=row, title=page.title, url=page.url, text=page.text)
        )
    writer.commit()
    writer.wait_merging_threads()


def text_schema() -> Any:
    import tantivy

    builder = tantivy.SchemaBuilder()
    builder.add_integer_field("row", stored=True, indexed=False)
    builder.add_text_field("title", stored=True, tokenizer_name="en_stem")
    builder.add_text_field("url", stored=True, index_option="basic")
    builder.add_text_field("text", stored=True, tokenizer_name="en_stem")
    return builder.build()


def _build_images(
    pages: tuple[Page, ...], out: Path, *, progress: bool, threads: int | None
) -> tuple[int, int]:
    """Rows, metadata and thumbnails of every readable page picture, in fixed batches (a
    rebuild gives the same rows; memory holds one batch of pictures); (kept, bad)."""
    from mmsr.search.local.colors import COLOR_DIM, color_histogram

    pictures = [(page, path) for page in pages for path in page.pictures]
    (out / "thumbs").mkdir()
    encode = _encoder(out, threads) if pictures else None
    rows: list[dict[str, str]] = []
    parts: list[np.ndarray] = []
    colors: list[np.ndarray] = []
    thumbs: dict[str, str] = {}
    bad = 0
    for batch in _batches(pictures, progress=progress):
        images = []
        for page, path in batch:
            image = load_image(path)
            if image is None:
                bad += 1
                continue
            if page.id not in thumbs:  # the page's first readable picture is its thumbnail
                thumbs[page.id] = f"thumbs/{len(thumbs):07d}.png"
                _thumbnail(image).save(out / thumbs[page.id], format="PNG")
            row = {"id": page.id, "title": page.title, "url": page.url}
            rows.append(row | {"thumbnail": thumbs[page.id]})
            images.append(image)
            colors.append(color_histogram(image))
        if images and encode is not None:
            parts.append(encode(images))
    matrix = np.concatenate(parts) if parts else np.zeros((0, 1280), dtype=np.float32)
    np.save(out / "images.npy", matrix.astype(np.float32))
    hist = np.stack(colors) if colors else np.zeros((0, COLOR_DIM), dtype=np.float32)
    np.save(out / "colors.npy", hist.astype(np.float16))
    with (out / "images.jsonl").open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    if bad:
        logger.warning("skipped %d unreadable image(s)", bad)
    return len(rows), bad


def _encoder(out: Path, threads: int | None) -> Any:
    """Pictures -> unit rows: the engine in ``out/engine`` when there is one, else the
    pretrained features."""
    if (out / "engine").is_dir():
        from mmsr.search.local.engine import Engine

        return Engine(out / "engine", threads=threads).encode
    from mmsr.search.local.features import ImageEncoder

    return ImageEncoder(threads=threads).encode


def _batches(items: list[Any], *, progress: bool) -> Iterator[list[Any]]:
    from tqdm import tqdm

    with tqdm(total=len(items), desc="image features", unit="img", disable=not progress) as bar:
        for start in range(0, len(items), BATCH_SIZE):
            batch = items[start : start + BATCH_SIZE]
            yield batch
            bar.update(len(batch))


def load_image(path: Path | None) -> Any:
    """The image at ``path`` fully decoded, or ``None`` (logged) when it cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as image:  # type: ignore[arg-type]
            image.load()
            return image.copy()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, TypeError) as err:
        logger.warning("unreadable image %s: %s", path, err)
        return None


def _thumbnail(image: Any) -> Any:
    from PIL import Image

    rgba = image.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    canvas.alpha_composite(rgba)
    thumb = canvas.convert("RGB")
    thumb.thumbnail((THUMB_SIZE, THUMB_SIZE), Image.Resampling.LANCZOS)
    return thumb


def file_sha256(path: Path) -> str:
    """The hex SHA-256 of a file's bytes (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _replace_dir(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``; an existing ``target`` is removed only after the move."""
    from mmsr.run_folder import replace_folder

    if target.exists() and not (target / "manifest.json").is_file() and any(target.iterdir()):
        raise ValueError(f"{target} exists and is not a search index; not replacing it")
    replace_folder(new, target)
