"""Turning arrays and plots into deterministic image bytes.

Every function returns bytes that depend only on its input: no timestamps, no software tags,
so a rebuilt figure is byte-identical and the committed site does not churn.
"""
from __future__ import annotations

import io
from typing import Any, Sequence

import numpy as np
from PIL import Image


def to_numpy_image(image: Any) -> np.ndarray:
    """Accept a torch tensor or array, (C,H,W), (H,W,C) or (H,W), values in [0, 1]; return uint8 HWC/HW."""
    if hasattr(image, "detach"):  # a torch tensor, without importing torch here
        image = image.detach().float().cpu().numpy()
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        arr = np.clip(np.nan_to_num(arr.astype(np.float64), nan=0.0), 0.0, 1.0)
        arr = np.round(arr * 255.0).astype(np.uint8)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = np.transpose(arr, (1, 2, 0))
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3):
        raise ValueError(f"expected one image of shape (C,H,W), (H,W,C) or (H,W); got {arr.shape}")
    return np.ascontiguousarray(arr)


def png_bytes(image: Any) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(to_numpy_image(image)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def grid_array(images: Sequence[Any], ncol: int, pad: int = 2, pad_value: int = 255) -> np.ndarray:
    """Tile equally sized images row-major into one array with a ``pad``-pixel gutter."""
    tiles = [to_numpy_image(im) for im in images]
    if not tiles:
        raise ValueError("cannot make a grid of zero images")
    shapes = {t.shape for t in tiles}
    if len(shapes) != 1:
        raise ValueError(f"grid images must share one shape; got {sorted(shapes)}")
    h, w = tiles[0].shape[:2]
    nrow = -(-len(tiles) // ncol)
    extra = tiles[0].shape[2:]
    out = np.full((nrow * h + (nrow - 1) * pad, ncol * w + (ncol - 1) * pad, *extra), pad_value, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, ncol)
        out[r * (h + pad): r * (h + pad) + h, c * (w + pad): c * (w + pad) + w] = tile
    return out


def gif_bytes(frames: Sequence[Any], fps: float, loop: int = 0, hold_last: int = 1) -> bytes:
    """An animated GIF; the last frame is held ``hold_last`` frames so the result can be seen."""
    import imageio.v3 as iio

    arrays = [to_numpy_image(f) for f in frames]
    arrays += [arrays[-1]] * (hold_last - 1)
    buf = io.BytesIO()
    iio.imwrite(buf, np.stack(arrays), extension=".gif", duration=1000.0 / fps, loop=loop)
    return buf.getvalue()


def strip_bytes(frames: Sequence[Any]) -> bytes:
    """All frames side by side in one PNG, for the page's frame slider."""
    return png_bytes(grid_array(frames, ncol=len(frames), pad=0))


def plot_bytes(fig) -> bytes:
    """A matplotlib figure as PNG without the software tag, so the bytes are reproducible."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()
