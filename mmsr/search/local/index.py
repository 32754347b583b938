"""Build a local search index from a corpus folder: tantivy BM25 text + image features.

Layout of an index folder::

    manifest.json   counts, corpus digest, feature and format versions
    text/           tantivy index (fields: page, title, url, text; English stemming)
    images.npy      (N, 1280) float32 unit-length EfficientNet-Lite0 features
    colors.npy      (N, 1728) float16 colour histograms of the same images (``colors.py``)
    images.jsonl    one {"id", "title", "url", "thumbnail"} per feature row
    thumbs/         PNG thumbnails (≤ THUMB_SIZE px) returned with image hits

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

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: colors.npy beside the features
FEATURES = "efficientnet-lite0/224/avgpool/l2+rgb12-histogram"
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


def build_index(
    corpus: str | Path,
    out: str | Path,
    *,
    skip_bad: bool = False,
    progress: bool = False,
    threads: int | None = None,
) -> IndexManifest:
    """Index the corpus folder ``corpus`` into ``out`` (replaced if it exists).

    ``threads`` sets torch's CPU threads for the image features (default: torch's choice).
    """
    corpus_dir, out_dir = Path(corpus), Path(out)
    pages = read_corpus(corpus_dir, skip_bad=skip_bad)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        _build_text(pages.pages, tmp / "text")
        images, bad = _build_images(pages.pages, tmp, progress=progress, threads=threads)
        manifest = IndexManifest(
            format=FORMAT_VERSION,
            features=FEATURES,
            corpus_sha256=_file_sha256(corpus_dir / "pages.jsonl"),
            pages=len(pages.pages),
            images=images,
            bad_images=bad,
            skipped_rows=pages.skipped,
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
    if manifest.format != FORMAT_VERSION:
        raise ValueError(
            f"{index}: index format {manifest.format}, expected {FORMAT_VERSION}; rebuild it "
            "with 'mmsr index build'"
        )
    return manifest


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
    """Features, metadata and thumbnails of every readable page image; (kept, bad)."""
    with_images = [page for page in pages if page.image is not None]
    (out / "thumbs").mkdir()
    rows: list[dict[str, str]] = []
    features: list[np.ndarray] = []
    colors: list[np.ndarray] = []
    bad = 0
    if with_images:
        from mmsr.search.local.colors import color_histogram
        from mmsr.search.local.features import FEATURE_DIM, ImageEncoder, prepare

        encoder = ImageEncoder(threads=threads)
        for batch in _batches(with_images, progress=progress):
            arrays = []
            for page in batch:
                image = load_image(page.image)
                if image is None:
                    bad += 1
                    continue
                thumb = f"thumbs/{len(rows):07d}.png"
                _thumbnail(image).save(out / thumb, format="PNG")
                rows.append(
                    {"id": page.id, "title": page.title, "url": page.url, "thumbnail": thumb}
                )
                arrays.append(prepare(image))
                colors.append(color_histogram(image))
            if arrays:
                features.append(encoder.encode_arrays(np.stack(arrays)))
    matrix = np.concatenate(features) if features else np.zeros((0, 1280), dtype=np.float32)
    if with_images:
        assert matrix.shape[1] == FEATURE_DIM
    np.save(out / "images.npy", matrix.astype(np.float32))
    from mmsr.search.local.colors import COLOR_DIM

    hist = np.stack(colors) if colors else np.zeros((0, COLOR_DIM), dtype=np.float32)
    np.save(out / "colors.npy", hist.astype(np.float16))
    with (out / "images.jsonl").open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    if bad:
        logger.warning("skipped %d unreadable image(s)", bad)
    return len(rows), bad


def _batches(pages: list[Page], *, progress: bool) -> Iterator[list[Page]]:
    from tqdm import tqdm

    with tqdm(total=len(pages), desc="image features", unit="img", disable=not progress) as bar:
        for start in range(0, len(pages), BATCH_SIZE):
            batch = pages[start : start + BATCH_SIZE]
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


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _replace_dir(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``; an existing ``target`` is removed only after the move."""
    if target.exists():
        if not (target / "manifest.json").is_file() and any(target.iterdir()):
            raise ValueError(f"{target} exists and is not a search index; not replacing it")
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
        new.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        new.rename(target)
