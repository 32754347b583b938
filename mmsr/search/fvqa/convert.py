"""Convert FVQA's released image-search results (a pickle) into a safe folder, once.

The release (``fvqa_{train,test}_image_search_results_cache.pkl``) maps each ``data_id`` to
``{"tool_returned_web_title_list": [title, ...], "tool_returned_images_urls": [image, ...]}``:
the page titles and thumbnails a reverse image search returned for that question's image, in
rank order. A thumbnail is a Pillow image or, for some hits, the thumbnail's url (some of them
dead by now); the release has no page urls. Pickles can run arbitrary code, so the file is read
with an unpickler that admits only plain containers, strings, bytes, numbers, and Pillow
images, and Pillow images are not even rebuilt by Pillow's own ``__setstate__``: they are
captured as inert state, checked (mode, size, byte count) and only then turned into pixels.

An entry that is not a dict of those lists, or whose titles are not strings, is skipped and
counted; a thumbnail that is neither an image, image bytes nor an http(s) url is dropped and
counted.

Output folder: ``results.jsonl`` (``{"data_id", "hits": [{"title", "url", "thumbnail",
"thumbnail_url"}]}``; ``thumbnail`` a path of an embedded picture, ``thumbnail_url`` a url the
backend fetches when a hit is served), ``thumbs/<sha256>.png`` and ``manifest.json`` (counts,
coverage). Not here: serving it (``backend.py``).
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

FORMAT_VERSION = 2
READABLE_FORMATS = frozenset({1, 2})  # format 1: no thumbnail urls, no coverage counts
MAX_PIXELS = 40_000_000
IMAGE_MODES = frozenset(
    {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "I", "F"}
)
# The release's keys first; the second of each pair is the older fixtures' name.
TITLE_KEYS = ("tool_returned_web_title_list",)
THUMB_KEYS = ("tool_returned_images_urls",)


def is_image_class(module: str, name: str) -> bool:
    """A Pillow image class a pickle may name (``PIL.Image.Image`` or any plugin's
    ``*ImageFile``); each is loaded as the inert ``_ImageState`` below, never imported."""
    if (module, name) == ("PIL.Image", "Image"):
        return True
    return (
        module.startswith("PIL.")
        and module.endswith("ImagePlugin")
        and name.endswith("ImageFile")
        and name.isidentifier()
    )


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
        if is_image_class(module, name):
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
    """One release entry as ``[{"title", "thumbnail": value|None}]``; ``ValueError`` when the
    entry is not a dict of a title list and a thumbnail list."""
    if not isinstance(entry, Mapping):
        raise ValueError(f"data_id {data_id!r}: entry of type {type(entry).__name__}")
    titles = _first(entry, TITLE_KEYS, data_id)
    thumbs = _first(entry, THUMB_KEYS, data_id, default=[])
    if not all(isinstance(title, str) for title in titles):
        raise ValueError(f"data_id {data_id!r}: titles must be strings")
    if len(thumbs) != len(titles):
        logger.debug("data_id %s: %d titles, %d thumbnails", data_id, len(titles), len(thumbs))
    # A hit is a title; a title without a thumbnail keeps its rank, a thumbnail without one
    # has nothing to show the model.
    padded = [*thumbs[: len(titles)], *[None] * (len(titles) - len(thumbs))]
    return [{"title": t, "thumbnail": i} for t, i in zip(titles, padded, strict=True)]


def _first(
    entry: Mapping[str, Any], keys: tuple[str, ...], data_id: str, default: Any = None
) -> list[Any]:
    for key in keys:
        if key in entry:
            value = entry[key]
            if not isinstance(value, list | tuple):
                raise ValueError(f"data_id {data_id!r}: {key} is not a list")
            return list(value)
    if default is None:
        raise ValueError(f"data_id {data_id!r}: none of the keys {', '.join(keys)}")
    return list(default)


def read_ids(path: str | Path) -> list[str]:
    """The ``data_id`` of every question of a split: a ``.parquet`` file with a ``data_id``
    column, a ``.jsonl`` file of objects with one, or a text file of one id a line."""
    path = Path(path)
    if path.suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        return [str(v) for v in pq.read_table(path, columns=["data_id"]).column(0).to_pylist()]
    ids = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        if path.suffix == ".jsonl":
            row = json.loads(line)
            if not isinstance(row, dict) or "data_id" not in row:
                raise ValueError(f"{path}:{number}: a row without 'data_id'")
            line = str(row["data_id"])
        ids.append(line)
    return ids


def convert_release(
    pickle_path: str | Path, out: str | Path, *, expected_ids: list[str] | None = None
) -> dict[str, int]:
    """Write the safe folder ``out`` from the release pickle; returns its counts.

    ``expected_ids`` (the split's questions) adds how many of them the release misses; the
    missing ids themselves are listed in ``manifest.json``."""
    release = load_release(pickle_path)
    out_dir = Path(out)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        counts = _write_folder(release, tmp, expected_ids)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info(
        "converted %d entries into %s: %d ids with results, %d without",
        counts["entries"],
        out,
        counts["ids_with_results"],
        counts["ids_without_results"],
    )
    return counts


def _write_folder(
    release: Mapping[Any, Any], folder: Path, expected_ids: list[str] | None
) -> dict[str, int]:
    (folder / "thumbs").mkdir()
    counts = dict.fromkeys(
        ("entries", "ids_with_results", "ids_without_results", "bad_entries", "hits"), 0
    )
    counts.update(dict.fromkeys(("thumbnails", "thumbnail_urls", "bad_thumbnails"), 0))
    with (folder / "results.jsonl").open("w", encoding="utf-8") as handle:
        for data_id in sorted(release, key=str):
            counts["entries"] += 1
            try:
                rows = entry_hits(str(data_id), release[data_id])
            except ValueError as err:
                logger.warning("skipping an entry: %s", err)
                counts["bad_entries"] += 1
                rows = []
            hits = [_stored_hit(row, folder, counts) for row in rows]
            counts["ids_with_results" if hits else "ids_without_results"] += 1
            if not hits:
                continue  # served as "no results for this id", like an id the release lacks
            handle.write(json.dumps({"data_id": str(data_id), "hits": hits}, ensure_ascii=False))
            handle.write("\n")
            counts["hits"] += len(hits)
    manifest: dict[str, Any] = {"format": FORMAT_VERSION, **counts}
    if expected_ids is not None:
        present = {str(key) for key in release}
        missing = sorted(set(expected_ids) - present)
        counts.update(ids_expected=len(set(expected_ids)), ids_missing=len(missing))
        manifest.update(ids_expected=counts["ids_expected"], ids_missing=len(missing))
        manifest["missing_ids"] = missing
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return counts


def _stored_hit(row: dict[str, Any], folder: Path, counts: dict[str, int]) -> dict[str, Any]:
    value = row["thumbnail"]
    hit: dict[str, Any] = {"title": row["title"], "url": "", "thumbnail": None}
    if isinstance(value, str) and value.lower().startswith(("http://", "https://")):
        hit["thumbnail_url"] = value
        counts["thumbnail_urls"] += 1
    elif value is not None:
        hit["thumbnail"] = _save_thumb(value, folder, counts)
    return hit


def _save_thumb(value: Any, folder: Path, counts: dict[str, int]) -> str | None:
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
