"""Convert FVQA's released image-search results (a pickle) into a safe folder, once.

The release maps each ``data_id`` to the titles and thumbnails that a reverse image search
returned for that question's image. Pickles can run arbitrary code, so the file is read with
an unpickler that admits only plain containers, strings, bytes, numbers, and Pillow images,
and Pillow images are not even rebuilt by Pillow's own ``__setstate__``: they are captured as
inert state, checked (mode, size, byte count) and only then turned into pixels.

Accepted shapes, per ``data_id`` (a dict key): a dict of parallel lists (titles under
``titles`` / ``title`` / ``tool_returned_web_title`` / ``web_titles``; thumbnails under
``thumbnails`` / ``images`` / ``cached_images`` / ``image``; optional ``urls`` / ``links``), or
a list of hits (dicts with ``title`` and ``thumbnail`` / ``image``, optional ``url``).
A thumbnail is a Pillow image, encoded image bytes, or ``None``.

Output folder: ``results.jsonl`` (``{"data_id", "hits": [{"title", "url", "thumbnail"}]}``),
``thumbs/<sha256>.png`` and ``manifest.json``. Not here: serving it (``backend.py``).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import pickle
import shutil
import tempfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MAX_PIXELS = 40_000_000
IMAGE_MODES = frozenset(
    {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "I", "F"}
)
# Globals a Pillow image pickle names; each becomes the inert ``_ImageState`` below.
IMAGE_CLASSES = frozenset(
    {
        ("PIL.Image", "Image"),
        ("PIL.PngImagePlugin", "PngImageFile"),
        ("PIL.JpegImagePlugin", "JpegImageFile"),
        ("PIL.WebPImagePlugin", "WebPImageFile"),
        ("PIL.GifImagePlugin", "GifImageFile"),
        ("PIL.BmpImagePlugin", "BmpImageFile"),
    }
)
TITLE_KEYS = ("titles", "title", "tool_returned_web_title", "web_titles")
THUMB_KEYS = ("thumbnails", "images", "cached_images", "image")
URL_KEYS = ("urls", "links", "url")


class UnsafePickleError(ValueError):
    """The pickle names something outside the allow-list; nothing of it was executed."""


class _ImageState:
    """What a pickled Pillow image leaves behind: its state list, nothing run."""

    def __init__(self, *args: Any) -> None:
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """How protocol-2 pickles spell bytes (``_codecs.encode(str, "latin1")``), nothing more."""
    if not isinstance(text, str) or encoding != "latin1":
        raise UnsafePickleError("unexpected _codecs.encode call in the pickle")
    return text.encode("latin1")


class RestrictedUnpickler(pickle.Unpickler):
    """Admits containers, scalars, ``OrderedDict`` and (inert) Pillow images; refuses the rest."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in IMAGE_CLASSES:
            return _ImageState
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        raise UnsafePickleError(f"refusing to load {module}.{name} from the pickle")


def load_release(path: str | Path) -> Mapping[Any, Any]:
    """The pickle at ``path`` through ``RestrictedUnpickler``; it must hold a dict."""
    with Path(path).open("rb") as handle:
        try:
            data = RestrictedUnpickler(handle).load()
        except UnsafePickleError:
            raise
        except Exception as err:  # any malformed pickle: a user error, clearly named
            raise ValueError(f"{path}: not a readable FVQA results pickle ({err})") from err
    if not isinstance(data, Mapping):
        raise ValueError(
            f"{path}: expected a dict of data_id -> results, got {type(data).__name__}"
        )
    return data


def to_image(value: Any) -> Any:
    """A Pillow image from captured state or encoded bytes; ``ValueError`` when unusable."""
    from PIL import Image

    if isinstance(value, _ImageState):
        state = value.state
        if not isinstance(state, list | tuple) or len(state) < 5:
            raise ValueError("malformed pickled image state")
        _info, mode, size, palette, data = state[:5]
        if mode not in IMAGE_MODES or not _is_size(size) or not isinstance(data, bytes):
            raise ValueError(f"unsupported pickled image (mode {mode!r}, size {size!r})")
        if size[0] * size[1] > MAX_PIXELS:
            raise ValueError(f"pickled image too large: {size[0]}x{size[1]}")
        image = Image.frombytes(mode, tuple(size), data)
        if mode in ("P", "PA") and palette:
            image.putpalette(palette)
        return image
    if isinstance(value, bytes | bytearray):
        try:
            with Image.open(io.BytesIO(value)) as opened:
                opened.load()
                return opened.copy()
        except (OSError, SyntaxError, Image.DecompressionBombError) as err:
            raise ValueError(f"unreadable thumbnail bytes ({err})") from err
    raise ValueError(f"unsupported thumbnail of type {type(value).__name__}")


def _is_size(size: Any) -> bool:
    return (
        isinstance(size, list | tuple)
        and len(size) == 2
        and all(isinstance(n, int) and 0 < n < 100_000 for n in size)
    )


def entry_hits(data_id: str, entry: Any) -> list[dict[str, Any]]:
    """One release entry as ``[{"title", "url", "thumbnail": value|None}]``."""
    if isinstance(entry, Mapping):
        titles = _first(entry, TITLE_KEYS, data_id)
        thumbs = _first(entry, THUMB_KEYS, data_id, default=[None] * len(titles))
        urls = _first(entry, URL_KEYS, data_id, default=[""] * len(titles))
        if not (len(titles) == len(thumbs) == len(urls)):
            raise ValueError(f"data_id {data_id!r}: titles, thumbnails and urls differ in length")
        rows = [
            {"title": t, "thumbnail": i, "url": u}
            for t, i, u in zip(titles, thumbs, urls, strict=True)
        ]
    elif isinstance(entry, list | tuple):
        rows = [_hit_row(data_id, hit) for hit in entry]
    else:
        raise ValueError(f"data_id {data_id!r}: unsupported entry of type {type(entry).__name__}")
    for row in rows:
        if not isinstance(row["title"], str) or not isinstance(row["url"] or "", str):
            raise ValueError(f"data_id {data_id!r}: titles and urls must be strings")
    return rows


def _first(
    entry: Mapping[str, Any], keys: tuple[str, ...], data_id: str, default: Any = None
) -> Any:
    for key in keys:
        if key in entry:
            value = entry[key]
            return list(value) if isinstance(value, list | tuple) else [value]
    if default is None:
        raise ValueError(f"data_id {data_id!r}: none of the keys {', '.join(keys)}")
    return default


def _hit_row(data_id: str, hit: Any) -> dict[str, Any]:
    if not isinstance(hit, Mapping) or "title" not in hit:
        raise ValueError(f"data_id {data_id!r}: a hit must be a dict with a 'title'")
    thumb = hit.get("thumbnail", hit.get("image"))
    return {"title": hit["title"], "url": hit.get("url", hit.get("link", "")), "thumbnail": thumb}


def convert_release(pickle_path: str | Path, out: str | Path) -> dict[str, int]:
    """Write the safe folder ``out`` from the release pickle; returns counts."""
    release = load_release(pickle_path)
    out_dir = Path(out)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        counts = _write_folder(release, tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("converted %d entries (%d hits) into %s", counts["entries"], counts["hits"], out)
    return counts


def _write_folder(release: Mapping[Any, Any], folder: Path) -> dict[str, int]:
    (folder / "thumbs").mkdir()
    counts = {"entries": 0, "hits": 0, "thumbnails": 0, "bad_thumbnails": 0}
    with (folder / "results.jsonl").open("w", encoding="utf-8") as handle:
        for data_id in sorted(release, key=str):
            hits = []
            for row in entry_hits(str(data_id), release[data_id]):
                hits.append({**row, "thumbnail": _save_thumb(row["thumbnail"], folder, counts)})
            handle.write(json.dumps({"data_id": str(data_id), "hits": hits}, ensure_ascii=False))
            handle.write("\n")
            counts["entries"] += 1
            counts["hits"] += len(hits)
    manifest = {"format": FORMAT_VERSION, **counts}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return counts


def _save_thumb(value: Any, folder: Path, counts: dict[str, int]) -> str | None:
    if value is None:
        return None
    try:
        image = to_image(value)
    except ValueError as err:
        logger.warning("dropping a thumbnail: %s", err)
        counts["bad_thumbnails"] += 1
        return None
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    name = f"thumbs/{hashlib.sha256(buffer.getvalue()).hexdigest()}.png"
    (folder / name).write_bytes(buffer.getvalue())
    counts["thumbnails"] += 1
    return name
