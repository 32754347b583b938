"""Images as bytes and back, for the wire (service, http client) and the cache.

Decoding untrusted bytes is bounded: the pixel count is read from the header before any
pixel is decoded (decompression bombs). An image over the cap is decoded at a smaller scale
where the format allows it (JPEG's DCT scaling, Pillow's ``draft``), else refused with
``ImageTooLarge``; anything Pillow cannot read is a ``ValueError``. Query images get a far
lower cap (``QUERY_MAX_PIXELS``) than other images: a compressible PNG of 40 megapixels is
128 KB on the wire and over 150 MB decoded. Digests hash the pixels, not an encoding, so the
same image always has the same key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import math
from typing import Any

from PIL import Image, UnidentifiedImageError

MAX_PIXELS = 40_000_000
QUERY_MAX_PIXELS = 2048 * 2048  # a reverse image search never looks at more detail
THUMBNAIL_SIDE = 256


class ImageTooLarge(ValueError):
    """An image with more pixels than the decoder may decode (refused from its header)."""


def image_digest(image: Any) -> str:
    """SHA-256 (hex) of a PIL image's mode, size and pixels: equal images give equal digests,
    whatever file they came from. The search cache's image keys are these digests, so their
    form must not change; anything that is not a readable image is a ``ValueError``."""
    try:
        header = f"{image.mode}:{image.size[0]}x{image.size[1]}:".encode()
        pixels = image.tobytes()
    except (AttributeError, OSError, ValueError) as err:
        raise ValueError(f"not a readable image: {err}") from err
    return hashlib.sha256(header + pixels).hexdigest()


def encode_image(image: Any, fmt: str = "PNG") -> bytes:
    """The image encoded as ``fmt`` (PNG by default; JPEG drops alpha first)."""
    if fmt.upper() == "JPEG" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def decode_image(data: bytes, *, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """A fully loaded PIL image of at most ``max_pixels`` pixels from encoded bytes (a larger
    JPEG decoded at 1/2, 1/4 or 1/8 scale); ``ImageTooLarge`` when it cannot be that small,
    ``ValueError`` when unreadable."""
    try:
        image = Image.open(io.BytesIO(data))
        _shrink_while_decoding(image, max_pixels)
        image.load()
    except Image.DecompressionBombError:
        raise ImageTooLarge(f"image has more than {max_pixels} pixels") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"not a readable image ({type(err).__name__})") from None
    return image


def _shrink_while_decoding(image: Any, max_pixels: int) -> None:
    """Ask a JPEG over ``max_pixels`` to decode at the largest scale that fits; refuse any
    other image over it before a pixel is decoded."""
    width, height = image.size
    if width * height <= max_pixels:
        return
    if image.format == "JPEG":
        for scale in (2, 4, 8):
            if math.ceil(width / scale) * math.ceil(height / scale) <= max_pixels:
                image.draft(image.mode, (width // scale, height // scale))
                break
    if image.size[0] * image.size[1] > max_pixels:
        raise ImageTooLarge(
            f"image has {width}x{height} pixels, more than the {max_pixels} allowed; "
            "send a smaller image"
        )


def fit_pixels(image: Any, max_pixels: int = QUERY_MAX_PIXELS) -> Any:
    """``image``, or a copy scaled down (aspect kept) to at most ``max_pixels`` pixels."""
    width, height = image.size
    if width * height <= max_pixels:
        return image
    scale = math.sqrt(max_pixels / (width * height))
    size = (max(1, int(width * scale)), max(1, int(height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)


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
