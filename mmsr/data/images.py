"""Images in data files: where relative names point, the field shapes releases use, a
check that the bytes are a readable image, and opening a sample's image with its id.

Not here: what to do about a bad image (the loader's policy, see ``loaders``).
"""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmsr.data.schema import FieldError
from mmsr.types import Sample


@dataclass(frozen=True)
class LoadContext:
    """Where a converter is: the file, its row, and where relative image paths point."""

    path: Path
    row: int
    image_dir: Path | None = None

    def resolve(self, name: str) -> Path:
        base = self.image_dir if self.image_dir is not None else self.path.parent
        candidate = Path(name)
        return candidate if candidate.is_absolute() else base / candidate


def read_image_file(name: str, ctx: LoadContext) -> tuple[bytes | None, str]:
    """The bytes of an image file named relative to the image folder, or ``None`` if absent."""
    path = ctx.resolve(name)
    try:
        return path.read_bytes(), str(path)
    except OSError:
        return None, str(path)


def image_from_field(value: Any, field: str, ctx: LoadContext) -> tuple[bytes | None, str | None]:
    """Image bytes and path from the shapes releases use: a list of ``{"bytes", "path"}`` (the
    first is the question's image), one such dict, raw bytes, base64 text or a file name."""
    if isinstance(value, list | tuple):
        if not value:
            return None, None
        value, field = value[0], f"{field}[0]"
    if value is None:
        return None, None
    if isinstance(value, bytes | bytearray):
        return bytes(value), None
    if isinstance(value, Mapping):
        data, path = value.get("bytes"), value.get("path")
        if data is not None and not isinstance(data, bytes | bytearray):
            raise FieldError(f"{field}.bytes", f"expected bytes, got {type(data).__name__}")
        if path is not None and not isinstance(path, str):
            raise FieldError(f"{field}.path", f"expected a string, got {type(path).__name__}")
        if data:
            return bytes(data), path or None
        return read_image_file(path, ctx) if path else (None, None)
    if isinstance(value, str):
        if len(value) > 512 and "/" not in value[:64]:  # an inline image, not a file name
            try:
                return base64.b64decode(value, validate=True), None
            except binascii.Error:
                raise FieldError(field, "neither a file name nor valid base64") from None
        return read_image_file(value, ctx)
    raise FieldError(field, f"expected an image, got {type(value).__name__}")


def image_problem(data: bytes) -> str | None:
    """Why ``data`` is not a readable image, or ``None`` when Pillow can open and verify it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        return f"{type(err).__name__}: {_pillow_problem(err)}"
    return None


def _pillow_problem(err: Exception) -> str:
    """Pillow's reason in words; its "cannot identify image file <_io.BytesIO object at …>"
    names a buffer, not a file, so it says what that means instead."""
    from PIL import UnidentifiedImageError

    return (
        "not an image format Pillow knows" if isinstance(err, UnidentifiedImageError) else str(err)
    )


DATA_ID_KEY = "data_id"
"""Where an opened image carries its question's id (``image.info``): the fvqa search backend
looks up the released results by it, since the pixels alone do not name the question."""


def open_image(data: bytes, data_id: str | None = None) -> Any:
    """The image in ``data`` as an RGB PIL image (what the search backends and policies take),
    with ``data_id`` (when given) in ``image.info["data_id"]``.

    Raises ``ValueError`` naming the question (``data_id``) when the bytes are not an image:
    loaders drop bytes that fail Pillow's quick check, so this fails on samples built by hand
    and on images cut short after their header (which that check cannot see).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            image = img.convert("RGB")
    except (UnidentifiedImageError, OSError) as err:
        whose = "" if data_id is None else f"question {data_id!r}: "
        raise ValueError(f"{whose}not a readable image ({_pillow_problem(err)})") from None
    if data_id is not None:
        image.info[DATA_ID_KEY] = data_id
    return image


def sample_image(sample: Sample) -> Any:
    """``sample``'s image, opened with its id as ``data_id``: what every rollout of a sample
    hands the engine (eval, ``mmsr rollout``, GRPO, SFT eval, balancing)."""
    return open_image(sample.image or b"", data_id=sample.id)
