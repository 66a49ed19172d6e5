"""Image grids as PNG files: tiling a batch of images and writing it with no dependencies.

`sample_grid` tiles ``(N, H, W[, C])`` images into one uint8 image,
`write_png` encodes 8-bit grayscale or RGB pixels as a PNG with only the
standard library, and `save_sample_grid` does both (through matplotlib when it
is installed). The GAN runner saves its generated samples this way;
`jaxnets.models.gan` re-exports these names.

Example:
  >>> import os, tempfile
  >>> images = np.zeros((4, 2, 2))  # four 2x2 images, 2 per row, 1 pixel of padding
  >>> sample_grid(images, ncols=2).shape
  (7, 7)
  >>> with tempfile.TemporaryDirectory() as tmp:
  ...     path = save_sample_grid(images, os.path.join(tmp, "grid.png"), ncols=2)
  ...     os.path.getsize(path) > 0
  True
"""

from __future__ import annotations

import math
import os
import struct as pystruct
import zlib

import jax
import numpy as np

from jaxnets.errors import ShapeError


def write_png(path: str | os.PathLike, pixels: np.ndarray) -> None:
    """Writes 8-bit grayscale ``(H, W)`` or RGB ``(H, W, 3)`` pixels as a PNG (no dependencies).

    Example:
      >>> import tempfile, os
      >>> tmp = tempfile.TemporaryDirectory()
      >>> path = os.path.join(tmp.name, "a.png")
      >>> write_png(path, np.zeros((2, 3), np.uint8))
      >>> with open(path, "rb") as f:
      ...     f.read(8)
      b'\\x89PNG\\r\\n\\x1a\\n'
      >>> tmp.cleanup()
    """
    pixels = np.ascontiguousarray(pixels, np.uint8)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[..., 0]
    if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] != 3):
        raise ShapeError(f"PNG pixels must be (H, W) or (H, W, 3), got {pixels.shape}.")
    height, width = pixels.shape[:2]
    color_type = 0 if pixels.ndim == 2 else 2  # grayscale or truecolor

    def chunk(tag: bytes, data: bytes) -> bytes:
        body = tag + data
        return pystruct.pack(">I", len(data)) + body + pystruct.pack(">I", zlib.crc32(body))

    # Each scanline starts with filter type 0 (none).
    raw = b"".join(b"\x00" + row.tobytes() for row in pixels.reshape(height, -1))
    header = pystruct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(
            chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
        )


def sample_grid(
    images: jax.Array | np.ndarray, ncols: int | None = None, value_range=(-1.0, 1.0), pad: int = 1
) -> np.ndarray:
    """Tiles ``(N, H, W[, C])`` images into one uint8 ``(rows*(H+pad)+pad, ...)`` image."""
    images = np.asarray(images, np.float32)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ShapeError(
            f"images must be (N, H, W), (N, H, W, 1) or (N, H, W, 3), got {images.shape}."
        )
    n, h, w, c = images.shape
    ncols = ncols or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    lo, hi = value_range
    scaled = np.clip((images - lo) / (hi - lo), 0.0, 1.0)
    grid = np.zeros((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), np.float32)
    for i in range(n):
        r, col = divmod(i, ncols)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[top : top + h, left : left + w] = scaled[i]
    pixels = np.round(grid * 255).astype(np.uint8)
    return pixels[..., 0] if c == 1 else pixels


def save_sample_grid(
    images: jax.Array | np.ndarray,
    path: str | os.PathLike,
    ncols: int | None = None,
    value_range: tuple[float, float] = (-1.0, 1.0),
) -> str:
    """Saves images as one PNG grid (matplotlib if installed, else `write_png`).

    Args:
      images: ``(N, H, W)``, ``(N, H, W, 1)`` or ``(N, H, W, 3)`` floats.
      path: where to write the PNG.
      ncols: images per row (default: about ``sqrt(N)``).
      value_range: the values mapped to black and white (generators emit [-1, 1]).

    Returns:
      ``path`` as a string.

    Example:
      >>> import os, struct, tempfile
      >>> import numpy as np
      >>> from jaxnets.models import save_sample_grid
      >>> images = np.linspace(-1, 1, 3 * 3 * 3).reshape(3, 3, 3)  # three 3x3 images
      >>> with tempfile.TemporaryDirectory() as tmp:
      ...     path = save_sample_grid(images, os.path.join(tmp, "grid.png"), ncols=3)
      ...     with open(path, "rb") as f:  # a PNG header holds width, height at bytes 16-24
      ...         print(os.path.basename(path), struct.unpack(">II", f.read(24)[16:]))
      grid.png (13, 5)
    """
    pixels = sample_grid(images, ncols, value_range)
    path = os.fspath(path)
    try:
        from matplotlib import image as mpl_image
    except ImportError:
        write_png(path, pixels)
    else:
        cmap = "gray" if pixels.ndim == 2 else None
        mpl_image.imsave(path, pixels, cmap=cmap, vmin=0, vmax=255, format="png")
    return path
