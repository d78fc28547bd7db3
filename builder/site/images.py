"""Images the render derives from stored figures, deterministically and outside every key: an animation's
last frame (its poster), a hybrid image's far views, and the size an <img> tag is given."""
from __future__ import annotations

from pathlib import Path


def last_frame_png(strip: Path, frames: int) -> bytes:
    """The last frame of an animation's strip, as the still that a player shows before the reader asks
    for the animation (a few KB instead of the strip's hundreds). Same pixels, deterministic bytes."""
    import io

    from PIL import Image

    with Image.open(strip) as image:
        width = image.width // frames
        buf = io.BytesIO()
        image.crop((image.width - width, 0, image.width, image.height)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def area_average_png(image_file: Path, size: tuple[int, int]) -> bytes:
    """The image shrunk to ``size`` (width, height): each new pixel the mean of the pixels in its bin, with
    the bins of adaptive average pooling (row bin i spans floor(i H / h) to ceil((i + 1) H / h)), which is
    how the sections' classifier reads an image seen small (torch's ``interpolate(mode="area")``). Pillow's
    box filter is not used: between whole factors it drops or keeps pixels instead of averaging them."""
    import io
    import math

    import numpy as np
    from PIL import Image

    with Image.open(image_file) as image:
        pixels = np.asarray(image if image.mode in ("L", "RGB") else image.convert("RGB"), dtype=np.float64)
    (height, width), (new_width, new_height) = pixels.shape[:2], size

    def bins(old: int, new: int) -> list[tuple[int, int]]:
        return [(i * old // new, math.ceil((i + 1) * old / new)) for i in range(new)]

    shrunk = np.array([[pixels[r0:r1, c0:c1].mean(axis=(0, 1)) for c0, c1 in bins(width, new_width)]
                       for r0, r1 in bins(height, new_height)])
    buf = io.BytesIO()
    Image.fromarray(np.round(shrunk).astype(np.uint8)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image; Pillow reads only the header."""
    from PIL import Image

    with Image.open(path) as image:
        return image.size
