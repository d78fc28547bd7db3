"""Write the Part A input images into content/images/ (run once; the outputs are committed).

Photographs come from scikit-image's bundled sample data (public-domain or CC0, see
content/images/SOURCES.md); "hand-drawn" sketches and digit sketches are drawn here with Pillow,
so nothing is downloaded and every input can be regenerated exactly.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image, ImageDraw, ImageFont

OUT = Path(__file__).resolve().parent.parent / "content" / "images"


def center_square(arr: np.ndarray, size: int, box: tuple[float, float, float] | None = None) -> Image.Image:
    """Crop a square (center x, center y, side as fractions of the short side) and resize."""
    img = Image.fromarray(arr).convert("RGB")
    w, h = img.size
    cx, cy, side = box or (0.5, 0.5, 1.0)
    s = side * min(w, h)
    left, top = cx * w - s / 2, cy * h - s / 2
    return img.crop((round(left), round(top), round(left + s), round(top + s))).resize((size, size), Image.LANCZOS)


def sketch(size: int, draw_fn) -> Image.Image:
    """Draw at 8x and downsample, like a marker drawing photographed small."""
    big = Image.new("RGB", (size * 8, size * 8), "white")
    draw_fn(ImageDraw.Draw(big), size * 8)
    return big.resize((size, size), Image.LANCZOS)


def house(d: ImageDraw.ImageDraw, s: int) -> None:
    w = s // 40
    d.rectangle([0, int(s * .78), s, s], fill=(90, 170, 70))
    d.rectangle([int(s * .25), int(s * .45), int(s * .75), int(s * .82)], fill=(205, 90, 60), outline="black", width=w)
    d.polygon([(int(s * .18), int(s * .47)), (int(s * .5), int(s * .18)), (int(s * .82), int(s * .47))],
              fill=(120, 60, 40), outline="black", width=w)
    d.rectangle([int(s * .44), int(s * .62), int(s * .56), int(s * .82)], fill=(250, 220, 120), outline="black", width=w)
    d.ellipse([int(s * .74), int(s * .04), int(s * .94), int(s * .24)], fill=(255, 210, 40), outline="black", width=w)


def tree(d: ImageDraw.ImageDraw, s: int) -> None:
    w = s // 40
    d.rectangle([0, 0, s, int(s * .8)], fill=(170, 210, 245))
    d.rectangle([0, int(s * .8), s, s], fill=(110, 180, 80))
    d.rectangle([int(s * .44), int(s * .5), int(s * .56), int(s * .86)], fill=(120, 80, 40), outline="black", width=w)
    d.ellipse([int(s * .2), int(s * .12), int(s * .8), int(s * .62)], fill=(40, 140, 50), outline="black", width=w)


def digit_sketch(strokes) -> Image.Image:
    """A white-on-black digit drawn with thick strokes, MNIST style (28 x 28, grey)."""
    big = Image.new("L", (224, 224), 0)
    d = ImageDraw.Draw(big)
    for kind, *args in strokes:
        if kind == "line":
            d.line(args[0], fill=255, width=22, joint="curve")
        else:
            d.arc(args[0], args[1], args[2], fill=255, width=22)
    return big.resize((28, 28), Image.LANCZOS)


def typed_digit(text: str) -> Image.Image:
    """A digit in Pillow's bundled font, fitted into 20 x 20 and centred in 28 x 28 as MNIST digits are
    (the "web image" of the local backend)."""
    big = Image.new("L", (400, 400), 0)
    d = ImageDraw.Draw(big)
    d.text((50, 20), text, fill=255, font=ImageFont.load_default(size=300))
    glyph = big.crop(big.getbbox())
    scale = 20 / max(glyph.size)
    glyph = glyph.resize((max(1, round(glyph.width * scale)), max(1, round(glyph.height * scale))), Image.LANCZOS)
    out = Image.new("L", (28, 28), 0)
    out.paste(glyph, ((28 - glyph.width) // 2, (28 - glyph.height) // 2))
    return out


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    photos = {
        "rocket": (skimage.data.rocket(), (0.5, 0.5, 1.0)),
        "cat": (skimage.data.chelsea(), (0.42, 0.5, 0.95)),
        "coffee": (skimage.data.coffee(), (0.5, 0.5, 1.0)),
        "astronaut": (skimage.data.astronaut(), (0.45, 0.4, 0.75)),
    }
    for name, (arr, box) in photos.items():
        center_square(arr, 64, box).save(OUT / f"{name}.png")
    sketch(64, house).save(OUT / "sketch_house.png")
    sketch(64, tree).save(OUT / "sketch_tree.png")
    # Digit sketches for the local MNIST backend: a "4" of three straight strokes and a loopy "2".
    digit_sketch([("line", [(150, 30), (150, 200)]), ("line", [(150, 30), (50, 140), (190, 140)])]).save(
        OUT / "sketch_digit4.png")
    digit_sketch([("arc", (55, 25, 175, 125), 180, 20), ("line", [(170, 90), (55, 195), (185, 195)])]).save(
        OUT / "sketch_digit2.png")
    typed_digit("7").save(OUT / "typed_digit7.png")


if __name__ == "__main__":
    main()
