"""Query images: a second drawing of each entity, augmented like a photo a user might take.

The web hosts Twemoji drawings; users ask with Noto Color Emoji drawings of the same thing
(a different artist), placed on a random background, scaled, rotated, cropped and sometimes
blurred, so reverse image search is a real, imperfect cross-style match. When the
Noto font is absent (or lacks a glyph) the Twemoji drawing itself is augmented instead, which
makes image search easier than intended; callers log and count it. Everything is drawn from a
``random.Random`` passed in, so the same seed gives the same bytes.
"""

from __future__ import annotations

import io
import logging
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageFont, features

logger = logging.getLogger(__name__)

NOTO_SIZE = 109
"""NotoColorEmoji.ttf is a CBDT bitmap font with a single strike: FreeType loads it only at
this size (glyphs come out 136x128 and are resized afterwards)."""
GLYPH_SIDE = 136
"""Side length the base drawing (Noto or Twemoji) is brought to before augmentation."""


class NotoRenderer:
    """Renders emoji text with Noto Color Emoji; ``render`` returns None for a missing glyph."""

    def __init__(self, font_path: Path) -> None:
        # Flags and other multi-code-point emoji are ligatures: only the raqm layout forms them.
        self.shaping = features.check("raqm") is True
        if not self.shaping:
            logger.warning(
                "Pillow has no raqm text shaping (is libfribidi0 installed?): flags and other "
                "multi-code-point emoji fall back to Twemoji query images"
            )
        layout = ImageFont.Layout.RAQM if self.shaping else ImageFont.Layout.BASIC
        self.font = ImageFont.truetype(str(font_path), NOTO_SIZE, layout_engine=layout)

    def render(self, chars: str) -> Image.Image | None:
        """The emoji as an RGBA image cropped to its pixels, or None when the font has no
        glyph for it (nothing drawn, or an unformed ligature drawn as several glyphs)."""
        right, bottom = self.font.getbbox(chars)[2:]
        size = (max(int(right), 1) + 8, max(int(bottom), 1) + 8)
        canvas = Image.new("RGBA", size, (0, 0, 0, 0))
        ImageDraw.Draw(canvas).text((0, 0), chars, font=self.font, embedded_color=True)
        box = canvas.getbbox()
        if box is None or (box[2] - box[0]) > 1.5 * GLYPH_SIDE:
            return None
        return canvas.crop(box)


def load_rgba(path: Path) -> Image.Image:
    """A Twemoji PNG as RGBA, upscaled to the Noto glyph size so both styles are alike."""
    with Image.open(path) as img:
        rgba = img.convert("RGBA")
    return rgba.resize((GLYPH_SIDE, GLYPH_SIDE), Image.Resampling.LANCZOS)


def _color(rng: random.Random) -> tuple[int, int, int]:
    return (rng.randrange(256), rng.randrange(256), rng.randrange(256))


def background(size: int, rng: random.Random) -> Image.Image:
    """A plain colour, a two-colour gradient, or a colour with a few random shapes on it."""
    style = rng.choice(("plain", "gradient", "clutter"))
    if style == "gradient":
        mask = Image.linear_gradient("L").resize((size, size)).rotate(rng.uniform(0, 360))
        return Image.composite(
            Image.new("RGB", (size, size), _color(rng)),
            Image.new("RGB", (size, size), _color(rng)),
            mask,
        )
    img = Image.new("RGB", (size, size), _color(rng))
    if style == "clutter":
        draw = ImageDraw.Draw(img)
        for _ in range(rng.randrange(2, 7)):
            x0, y0 = rng.randrange(size), rng.randrange(size)
            x1, y1 = x0 + rng.randrange(8, size // 2), y0 + rng.randrange(8, size // 2)
            shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
            shape((x0, y0, x1, y1), fill=_color(rng))
    return img


def augment(glyph: Image.Image, size: int, rng: random.Random) -> Image.Image:
    """Place ``glyph`` (RGBA) on a random background: scale, rotate, shift, crop, blur."""
    canvas = background(size, rng)
    side = max(8, int(size * rng.uniform(0.45, 0.9)))
    scale = side / max(glyph.size)
    thing = glyph.resize(
        (max(1, round(glyph.width * scale)), max(1, round(glyph.height * scale))),
        Image.Resampling.LANCZOS,
    )
    thing = thing.rotate(rng.uniform(-30, 30), resample=Image.Resampling.BICUBIC, expand=True)
    slack_x, slack_y = size - thing.width, size - thing.height
    x = rng.randint(min(0, slack_x), max(0, slack_x))
    y = rng.randint(min(0, slack_y), max(0, slack_y))
    canvas.paste(thing, (x, y), thing)
    crop = rng.uniform(0.75, 1.0) * size
    cx, cy = rng.uniform(0, size - crop), rng.uniform(0, size - crop)
    canvas = canvas.crop((round(cx), round(cy), round(cx + crop), round(cy + crop)))
    canvas = canvas.resize((size, size), Image.Resampling.BICUBIC)
    if rng.random() < 0.5:
        canvas = canvas.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.5)))
    return canvas


def jpeg_bytes(img: Image.Image, quality: int = 88) -> bytes:
    """JPEG encoding with fixed settings and no metadata (same pixels → same bytes)."""
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=quality, optimize=False)
    return buf.getvalue()
