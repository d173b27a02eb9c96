"""Image files: sample grids (PNG), and the conversions between stored uint8 pixels and generator output."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch

from distgan.checkpoint import atomic_write_bytes


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1], the range of the generators' Tanh (the inverse of :func:`to_uint8`)."""
    return images.float().div(127.5).sub(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Generator output in [-1, 1] -> uint8 [0, 255], same shape."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def grid_array(images: torch.Tensor, columns: int | None = None, padding: int = 2) -> np.ndarray:
    """Tile ``[N, C, H, W]`` images in [-1, 1] into one ``[H', W', C]`` uint8 array."""
    count, channels, height, width = images.shape
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    canvas = np.full((rows * (height + padding) + padding, columns * (width + padding) + padding, channels),
                     255, dtype=np.uint8)
    pixels = to_uint8(images).permute(0, 2, 3, 1).numpy()
    for index in range(count):
        row, column = divmod(index, columns)
        top, left = padding + row * (height + padding), padding + column * (width + padding)
        canvas[top:top + height, left:left + width] = pixels[index]
    return canvas


def png_bytes(array: np.ndarray, scale: int = 1) -> bytes:
    from PIL import Image

    picture = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def save_grid(images: torch.Tensor, path: Path, columns: int | None = None) -> None:
    scale = 2 if images.shape[-1] <= 32 else 1
    atomic_write_bytes(path, png_bytes(grid_array(images, columns), scale))
