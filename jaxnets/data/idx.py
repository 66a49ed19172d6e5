"""A strict reader (and a small writer) for IDX files, the MNIST file format.

Layout: bytes 0-1 are zero, byte 2 is the element type, byte 3 the number of
dimensions, then one big-endian uint32 per dimension, then the elements in
C order, big-endian. Files may be gzip-compressed.

The reader never trusts the header: it checks the declared size against the
bytes that are really there before allocating anything, reads gzip streams
only as far as the header says (so a gzip bomb costs nothing), and turns every
kind of malformed input into `jaxnets.errors.FormatError`.

Example:
  >>> import numpy as np
  >>> from jaxnets.data.idx import read_idx, write_idx
  >>> blob = write_idx(np.arange(6, dtype=np.uint8).reshape(2, 3))
  >>> blob[:4]
  b'\\x00\\x00\\x08\\x02'
  >>> read_idx(blob)
  array([[0, 1, 2],
         [3, 4, 5]], dtype=uint8)
"""

from __future__ import annotations

import gzip
import io
import os
import zlib
from pathlib import Path

import numpy as np

from jaxnets.errors import FormatError

# IDX type byte -> big-endian numpy dtype.
IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dtype.newbyteorder("="): code for code, dtype in IDX_TYPES.items()}
_GZIP_MAGIC = b"\x1f\x8b"
# Headers declaring more than this are refused (the real files hold ~50 MB), so a
# forged header or gzip bomb cannot make the reader allocate or inflate without bound.
DEFAULT_MAX_BYTES = 1 << 31


def _describe(source) -> str:
    return repr(str(source)) if isinstance(source, str | os.PathLike) else "IDX bytes"


def _read_exact(stream, size: int, what: str, name: str) -> bytes:
    """Reads exactly ``size`` bytes or raises `FormatError` (short file)."""
    chunks, left = [], size
    while left > 0:
        chunk = stream.read(min(left, 1 << 24))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    data = b"".join(chunks)
    if len(data) != size:
        raise FormatError(
            f"{name}: truncated IDX {what}: expected {size} bytes, found {len(data)}. "
            "Re-download or reinstall the file."
        )
    return data


def _parse(stream, name: str, limit: int | None, max_bytes: int) -> np.ndarray:
    header = _read_exact(stream, 4, "header", name)
    if header[0] != 0 or header[1] != 0:
        raise FormatError(
            f"{name}: not an IDX file: bytes 0-1 must be zero, got {header[:2].hex()} "
            "(expected an MNIST-style file such as train-images-idx3-ubyte[.gz])."
        )
    if header[2] not in IDX_TYPES:
        valid = ", ".join(f"0x{code:02X}" for code in IDX_TYPES)
        raise FormatError(f"{name}: unknown IDX type byte 0x{header[2]:02X}; valid: {valid}.")
    dtype, ndim = IDX_TYPES[header[2]], header[3]
    if ndim == 0:
        raise FormatError(f"{name}: IDX header declares 0 dimensions; expected at least 1.")
    dims = tuple(int(d) for d in np.frombuffer(_read_exact(stream, 4 * ndim, "dims", name), ">u4"))
    row = 1
    for d in dims[1:]:
        row *= d
    total = dims[0] * row * dtype.itemsize
    if total > max_bytes:
        raise FormatError(
            f"{name}: IDX header declares shape {dims} ({total} bytes), over the "
            f"max_bytes={max_bytes} limit; pass a larger max_bytes if the file is genuine."
        )
    if limit is None:
        payload = _read_exact(stream, total, "data", name)
        if stream.read(1):
            raise FormatError(
                f"{name}: IDX file has bytes after the {total}-byte payload of shape {dims}."
            )
    else:
        if not 0 <= limit <= dims[0]:
            raise FormatError(f"{name}: limit={limit} outside [0, {dims[0]}] rows.")
        dims = (limit, *dims[1:])
        payload = _read_exact(stream, limit * row * dtype.itemsize, "data", name)
    return np.frombuffer(payload, dtype).astype(dtype.newbyteorder("="), copy=True).reshape(dims)


def read_idx(
    source: str | os.PathLike | bytes | bytearray | memoryview,
    *,
    limit: int | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> np.ndarray:
    """Reads an IDX array from a path or from bytes, gzip or raw.

    Args:
      source: a file path, or the file's bytes.
      limit: read only the first ``limit`` rows (fast for tests); the rest of the
        file is then not checked.
      max_bytes: refuse headers that declare a bigger payload.

    Returns:
      A native-endian numpy array with the declared shape and type.

    Raises:
      FormatError: bad magic, unknown type, truncated data, trailing bytes,
        broken gzip stream.
      FileNotFoundError: ``source`` is a path that does not exist.

    Example:
      >>> import numpy as np
      >>> read_idx(write_idx(np.array([1.5, -2.0], np.float32), compress=True))
      array([ 1.5, -2. ], dtype=float32)
    """
    if isinstance(source, str | os.PathLike):
        raw = open(source, "rb")  # closed by the with below
    elif isinstance(source, bytes | bytearray | memoryview):
        raw = io.BytesIO(bytes(source))
    else:
        raise TypeError(f"read_idx expects a path or bytes, got {type(source).__name__}.")
    name = _describe(source)
    with raw:
        gzipped = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        stream = gzip.GzipFile(fileobj=raw) if gzipped else raw
        try:
            return _parse(stream, name, limit, max_bytes)
        except FormatError:
            raise
        except (OSError, EOFError, zlib.error, ValueError) as err:
            raise FormatError(f"{name}: corrupt gzip stream in IDX file ({err}).") from err


def write_idx(
    array: np.ndarray, path: str | os.PathLike | None = None, *, compress: bool = False
) -> bytes:
    """Encodes ``array`` as IDX bytes; also writes them to ``path`` when given.

    Args:
      array: an array of dtype uint8, int8, int16, int32, float32 or float64,
        with at least one dimension.
      path: optional file to write.
      compress: gzip the bytes (as the MNIST distribution does).

    Returns:
      The encoded bytes.

    Example:
      >>> len(write_idx(np.zeros((2, 2), np.uint8)))
      16
    """
    array = np.asarray(array)
    code = _CODES.get(array.dtype.newbyteorder("="))
    if code is None:
        raise FormatError(
            f"write_idx cannot encode dtype {array.dtype}; use one of "
            f"{', '.join(str(d) for d in _CODES)}."
        )
    if array.ndim == 0 or array.ndim > 255 or any(d >= 1 << 32 for d in array.shape):
        raise FormatError(f"write_idx needs 1 to 255 dimensions below 2**32, got {array.shape}.")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    blob = header + np.ascontiguousarray(array, IDX_TYPES[code]).tobytes()
    if compress:
        blob = gzip.compress(blob, mtime=0)
    if path is not None:
        Path(path).write_bytes(blob)
    return blob
