"""Images as bytes and back, for the wire (service, http client) and the cache.

Decoding untrusted bytes is bounded: the pixel count is checked from the header before any
pixel is decoded (decompression bombs), and anything Pillow cannot read is a ``ValueError``.
Digests hash the pixels, not an encoding, so the same image always has the same key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
from typing import Any

from PIL import Image, UnidentifiedImageError

MAX_PIXELS = 40_000_000
THUMBNAIL_SIDE = 256


def image_digest(image: Any) -> str:
    """A stable hex digest of a PIL image's mode, size and pixels."""
    digest = hashlib.sha256(f"{image.mode}|{image.size[0]}x{image.size[1]}|".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def encode_image(image: Any, fmt: str = "PNG") -> bytes:
    """The image encoded as ``fmt`` (PNG by default; JPEG drops alpha first)."""
    if fmt.upper() == "JPEG" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def decode_image(data: bytes, *, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """A fully loaded PIL image from encoded bytes; ``ValueError`` when unreadable or too big."""
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > max_pixels:
            raise ValueError(f"image has {width}x{height} pixels, more than {max_pixels}")
        image.load()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, SyntaxError) as err:
        raise ValueError(f"not a readable image ({type(err).__name__})") from None
    return image


def to_base64(image: Any, fmt: str = "PNG") -> str:
    return base64.b64encode(encode_image(image, fmt)).decode("ascii")


def from_base64(text: str, *, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decodes standard base64 (a ``data:`` url prefix is accepted) into an image."""
    if text.startswith("data:"):
        text = text.split(",", 1)[-1]
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("image is not valid base64") from None
    return decode_image(data, max_pixels=max_pixels)


def thumbnail_png(data: bytes, side: int = THUMBNAIL_SIDE) -> bytes:
    """Untrusted image bytes as a PNG no larger than ``side`` pixels a side."""
    image = decode_image(data)
    image.thumbnail((side, side))
    return encode_image(image, "PNG")
