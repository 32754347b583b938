"""Views: a page picture as a user might photograph it, for training the image engine.

A view puts the picture on a random background (plain, gradient, noise or clutter), scales,
rotates, shifts and crops it, may rotate the whole frame, jitters brightness, contrast and
saturation, blurs, shrinks and JPEG-compresses it. The hue is left alone: a flag in other
colours is another flag. Everything is drawn from the ``random.Random`` passed in, so a seed
gives the same views. These views are the engine's own: they are made from the corpus's page
pictures only, never from a question's image. Pure PIL and numpy, no torch.
"""

from __future__ import annotations

import io
import random
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

VIEW_SIDE = 224
"""Side of the square canvas a view is drawn on (before the final shrink)."""


def _color(rng: random.Random) -> tuple[int, int, int]:
    return (rng.randrange(256), rng.randrange(256), rng.randrange(256))


def background(side: int, rng: random.Random) -> Image.Image:
    """A plain colour, a gradient, coarse colour noise, or shapes on a colour."""
    style = rng.random()
    if style < 0.3:
        return Image.new("RGB", (side, side), _color(rng))
    if style < 0.55:
        mask = Image.linear_gradient("L").resize((side, side)).rotate(rng.uniform(0, 360))
        first, second = (Image.new("RGB", (side, side), _color(rng)) for _ in range(2))
        return Image.composite(first, second, mask)
    if style < 0.75:
        cells = max(2, side // rng.choice((4, 8, 16)))
        noise = np.random.default_rng(rng.randrange(1 << 30)).integers(
            0, 256, (cells, cells, 3), dtype=np.uint8
        )
        return Image.fromarray(noise).resize((side, side), Image.Resampling.BILINEAR)
    img = Image.new("RGB", (side, side), _color(rng))
    draw = ImageDraw.Draw(img)
    for _ in range(rng.randrange(2, 9)):
        x0, y0 = rng.randrange(side), rng.randrange(side)
        x1, y1 = x0 + rng.randrange(8, side // 2), y0 + rng.randrange(8, side // 2)
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x0, y0, x1, y1), fill=_color(rng))
    return img


def view(picture: Any, rng: random.Random, side: int = VIEW_SIDE) -> Image.Image:
    """One random view (RGB) of ``picture`` (any PIL image; transparency is respected)."""
    thing = picture.convert("RGBA")
    canvas = background(side, rng)
    size = max(8, int(side * rng.uniform(0.4, 0.95)))
    scale = size / max(thing.size)
    thing = thing.resize(
        (max(1, round(thing.width * scale)), max(1, round(thing.height * scale))),
        Image.Resampling.BILINEAR,
    )
    thing = thing.rotate(rng.uniform(-40, 40), resample=Image.Resampling.BICUBIC, expand=True)
    slack_x, slack_y = side - thing.width, side - thing.height
    x = rng.randint(min(0, slack_x), max(0, slack_x))
    y = rng.randint(min(0, slack_y), max(0, slack_y))
    canvas.paste(thing, (x, y), thing)
    crop = rng.uniform(0.65, 1.0) * side
    cx, cy = rng.uniform(0, side - crop), rng.uniform(0, side - crop)
    canvas = canvas.crop((round(cx), round(cy), round(cx + crop), round(cy + crop)))
    if rng.random() < 0.5:
        canvas = canvas.rotate(
            rng.uniform(-30, 30),
            resample=Image.Resampling.BILINEAR,
            expand=True,
            fillcolor=_color(rng),
        )
    canvas = ImageEnhance.Brightness(canvas).enhance(rng.uniform(0.6, 1.4))
    canvas = ImageEnhance.Contrast(canvas).enhance(rng.uniform(0.6, 1.4))
    canvas = ImageEnhance.Color(canvas).enhance(rng.uniform(0.5, 1.5))
    if rng.random() < 0.7:
        canvas = canvas.filter(ImageFilter.GaussianBlur(rng.uniform(0.2, 2.5)))
    small = rng.randint(64, side)
    canvas = canvas.resize((small, small), Image.Resampling.BILINEAR)
    if rng.random() < 0.7:
        buf = io.BytesIO()
        canvas.save(buf, format="JPEG", quality=rng.randint(20, 90))
        with Image.open(io.BytesIO(buf.getvalue())) as decoded:
            canvas = decoded.convert("RGB")
    return canvas
