"""A reader for R's XDR serialization and lazy-load databases, written from the format.

No R needed. Covers the data types a package's ``data/Rdata.rdb`` holds:
vectors (logical, integer, double, complex, character, list, raw), pairlists,
symbols, references and the special environments. Code objects (closures,
bytecode) raise `FormatError`, as does anything truncated or inconsistent;
the reader never reads past its buffer and never recurses without bound.

Serialized stream: ``X\\n``, then big-endian ints version, writer version,
minimum reader version (and for version 3 the native encoding string), then
items. Each item starts with a flags int: ``type = flags & 0xFF``, bit 9 = has
attributes, bit 10 = has tag, bits 12+ = string encoding levels.

Example:
  >>> from jaxnets.data.rdata import unserialize
  >>> blob = bytes.fromhex("580a000000020004020000020300")  # X\\n, v2, R 4.2.0, 2.3.0
  >>> blob += bytes.fromhex("0000000d00000002" "00000007" "80000000")  # INTSXP c(7L, NA)
  >>> unserialize(blob).value.tolist()
  [7, -2147483648]
"""

from __future__ import annotations

import bz2
import dataclasses
import gzip
import io
import lzma
import zlib
from typing import Any

import numpy as np

from jaxnets.errors import FormatError

NA_INTEGER = -(2**31)
MAX_DEPTH = 200  # two or three Python frames per level stay under the recursion limit
MAX_UNCOMPRESSED = 1 << 32

_VECTORS = {10: ("logical", ">i4"), 13: ("integer", ">i4"), 14: ("double", ">f8")}
_VECTORS[15] = ("complex", ">c16")
_SPECIAL = {
    241: "baseenv",
    242: "emptyenv",
    250: "basenamespace",
    251: "missingarg",
    252: "unboundvalue",
    253: "globalenv",
}
# Types serialized as (attributes?, tag?, car, cdr) cells.
_PAIRLISTS = {
    2: "pairlist",
    3: "closure",
    5: "promise",
    6: "language",
    17: "dots",
    239: "pairlist",
    240: "language",
}
_NAMED_REFS = {247: "persist", 248: "package", 249: "namespace"}


@dataclasses.dataclass(eq=False)
class RObject:
    """An R value: ``kind`` (``"character"``, ``"list"``, ``"integer"``...), its
    ``value`` (list, str list, numpy array, or ``[(tag, value), ...]`` for pairlists)
    and its ``attributes`` by name."""

    kind: str
    value: Any
    attributes: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def names(self) -> list | None:
        names = self.attributes.get("names")
        # Only a character vector names things; anything else is malformed data.
        if not isinstance(names, RObject) or names.kind != "character":
            return None
        return names.value


class Symbol(str):
    """An R symbol (a name)."""


class _Reader:
    def __init__(self, data: bytes, where: str):
        self.data, self.pos, self.where = data, 0, where
        self.refs: list = []

    def fail(self, what: str):
        raise FormatError(f"{self.where}: {what} at byte {self.pos}.")

    def take(self, size: int) -> bytes:
        if size < 0 or self.pos + size > len(self.data):
            self.fail(f"truncated R data: need {size} bytes, {len(self.data) - self.pos} left")
        out = self.data[self.pos : self.pos + size]
        self.pos += size
        return out

    def int(self) -> int:
        return int.from_bytes(self.take(4), "big", signed=True)

    def length(self, item_size: int) -> int:
        n = self.int()
        if n == -1:  # long vector: two more ints
            n = (self.int() << 32) + (self.int() & 0xFFFFFFFF)
        if n < 0 or n * item_size > len(self.data) - self.pos:
            self.fail(f"vector length {n} does not fit in the remaining data")
        return n

    def header(self) -> None:
        if self.take(2) != b"X\n":
            self.fail("not XDR-serialized R data (expected 'X\\n')")
        version = self.int()
        self.int(), self.int()  # writer and minimum reader versions
        if version == 3:
            self.take(self.length(1))  # native encoding name
        elif version != 2:
            self.fail(f"unsupported serialization version {version}")

    def charsxp(self, flags: int) -> str | None:
        n = self.int()
        if n == -1:
            return None
        if n < -1:
            self.fail(f"negative string length {n}")
        raw = self.take(n)
        latin1 = (flags >> 12) & 4 and not (flags >> 12) & 8
        return raw.decode("latin-1" if latin1 else "utf-8", errors="replace")

    def attributes(self, depth: int) -> dict:
        attrs = self.item(depth)
        if attrs is None:
            return {}
        if not isinstance(attrs, RObject) or attrs.kind != "pairlist":
            self.fail("attributes are not a pairlist")
        return {str(tag): value for tag, value in attrs.value}

    def item(self, depth: int = 0):
        if depth > MAX_DEPTH:
            self.fail("R data nested too deeply")
        flags = self.int()
        kind, has_attr, has_tag = flags & 0xFF, flags & (1 << 9), flags & (1 << 10)
        if kind == 254:
            return None
        if kind in _SPECIAL:
            return RObject(_SPECIAL[kind], None)
        if kind == 255:  # reference to an earlier symbol or environment
            index = flags >> 8 or self.int()
            if not 1 <= index <= len(self.refs):
                self.fail(f"reference {index} to an unknown object")
            return self.refs[index - 1]
        if kind in _NAMED_REFS:  # a string vector naming the object, then a new reference
            if self.int() != 0:
                self.fail("malformed persistent name")
            obj = RObject(_NAMED_REFS[kind], [self.item(depth + 1) for _ in range(self.length(4))])
            self.refs.append(obj)
            return obj
        if kind == 1:
            name = self.item(depth + 1)
            if not isinstance(name, str):
                self.fail("symbol without a name")
            symbol = Symbol(name)
            self.refs.append(symbol)
            return symbol
        if kind in _PAIRLISTS:
            return self.pairlist(flags, depth)
        if kind == 4:
            return self.environment(depth)
        if kind == 9:
            return self.charsxp(flags)
        if kind in _VECTORS:
            name, dtype = _VECTORS[kind]
            n = self.length(np.dtype(dtype).itemsize)
            value = np.frombuffer(self.take(n * np.dtype(dtype).itemsize), dtype)
            obj = RObject(name, value.astype(np.dtype(dtype).newbyteorder("=")))
        elif kind in (16, 19, 20):
            n = self.length(4)
            value = [self.item(depth + 1) for _ in range(n)]
            if kind == 16 and not all(v is None or isinstance(v, str) for v in value):
                self.fail("character vector holding something other than strings")
            obj = RObject({16: "character", 19: "list", 20: "expression"}[kind], value)
        elif kind == 24:
            obj = RObject("raw", self.take(self.length(1)))
        elif kind == 25:
            obj = RObject("S4", None)
        else:
            self.fail(f"unsupported R object type {kind}")
        if has_attr:
            obj.attributes = self.attributes(depth + 1)
        if has_tag:
            self.fail(f"type {kind} cannot carry a tag")
        return obj

    def pairlist(self, flags: int, depth: int) -> RObject:
        # Iterative over the cdr chain, so long lists do not recurse.
        kind = _PAIRLISTS[flags & 0xFF]
        cells, attrs = [], {}
        while True:
            has_attr, has_tag = flags & (1 << 9), flags & (1 << 10)
            cell_attrs = self.attributes(depth + 1) if has_attr else {}
            attrs = attrs or cell_attrs
            tag = self.item(depth + 1) if has_tag else None
            cells.append((tag, self.item(depth + 1)))
            flags = self.int()
            if flags & 0xFF == 254:
                return RObject(kind, cells, attrs)
            if flags & 0xFF not in _PAIRLISTS:
                self.pos -= 4
                cells.append((None, self.item(depth + 1)))  # dotted tail
                return RObject(kind, cells, attrs)

    def environment(self, depth: int) -> RObject:
        env = RObject("environment", {})
        self.refs.append(env)
        self.int()  # locked
        enclosure, frame, table, attrs = (self.item(depth + 1) for _ in range(4))
        for part in (frame, table):
            for cell in _cells(part):
                if isinstance(cell, tuple) and cell[0] is not None:
                    env.value[str(cell[0])] = cell[1]
        env.attributes = {str(t): v for t, v in _cells(attrs)}
        env.value.setdefault("..enclosure", enclosure)
        return env


def _cells(obj) -> list:
    if isinstance(obj, RObject) and obj.kind == "pairlist":
        return list(obj.value)
    if isinstance(obj, RObject) and obj.kind == "list":  # hashed frame: buckets of pairlists
        return [cell for bucket in obj.value for cell in _cells(bucket)]
    return []


def unserialize(data: bytes, where: str = "R data") -> Any:
    """Decodes one XDR-serialized R object (the payload of ``.rds`` or an ``.rdb`` chunk)."""
    reader = _Reader(bytes(data), where)
    reader.header()
    value = reader.item()
    if reader.pos != len(reader.data):
        reader.fail(f"{len(reader.data) - reader.pos} unexpected trailing bytes")
    return value


def _inflate(decompressor, payload: bytes, size: int, where: str) -> bytes:
    try:
        out = decompressor.decompress(payload, size + 1) if size else b""
    except (zlib.error, OSError, lzma.LZMAError, ValueError, EOFError) as err:
        raise FormatError(f"{where}: corrupt compressed chunk ({err}).") from err
    if len(out) != size:
        raise FormatError(f"{where}: chunk inflates to {len(out)} bytes, header says {size}.")
    return out


def decompress_chunk(chunk: bytes, compression: int = 1, where: str = "rdb chunk") -> bytes:
    """Inflates one ``.rdb`` chunk: 4-byte big-endian size, then the compressed data.

    ``compression`` is the index's ``compressed`` entry: 1 zlib, 2 bzip2, 3 xz
    (the latter two with a type byte: ``'0'`` stored, ``'2'`` bzip2, ``'Z'`` xz).
    """
    if len(chunk) < 4:
        raise FormatError(f"{where}: chunk of {len(chunk)} bytes has no size header.")
    size, payload = int.from_bytes(chunk[:4], "big"), chunk[4:]
    if compression in (2, 3):
        if not payload:
            raise FormatError(f"{where}: chunk has no compression type byte.")
        kind, payload = payload[:1], payload[1:]
        if kind == b"0":
            if len(payload) != size:
                raise FormatError(f"{where}: stored chunk of {len(payload)} bytes, says {size}.")
            return payload
        if kind == b"2":
            return _inflate(bz2.BZ2Decompressor(), payload, size, where)
        if kind == b"Z":
            filters = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]
            return _inflate(
                lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=filters), payload, size, where
            )
        raise FormatError(f"{where}: unknown chunk compression type {kind!r}.")
    if compression != 1:
        raise FormatError(f"{where}: unknown compression code {compression}.")
    return _inflate(zlib.decompressobj(), payload, size, where)


def _open_index(data: bytes, where: str) -> bytes:
    try:
        if data[:2] == b"\x1f\x8b":
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as fh:
                out = fh.read(MAX_UNCOMPRESSED + 1)
        elif data[:3] == b"BZh":
            out = bz2.BZ2Decompressor().decompress(data, MAX_UNCOMPRESSED + 1)
        elif data[:6] == b"\xfd7zXZ\x00":
            out = lzma.LZMADecompressor().decompress(data, MAX_UNCOMPRESSED + 1)
        else:
            out = data
    except (OSError, EOFError, zlib.error, lzma.LZMAError, ValueError) as err:
        raise FormatError(f"{where}: corrupt compressed index ({err}).") from err
    if len(out) > MAX_UNCOMPRESSED:
        raise FormatError(f"{where}: index inflates beyond {MAX_UNCOMPRESSED} bytes.")
    return out


def read_lazyload(rdb: bytes, rdx: bytes, *, where: str = "Rdata") -> dict[str, Any]:
    """Reads every variable of an R lazy-load database (``.rdb`` + ``.rdx`` bytes).

    Args:
      rdb: the database file's bytes (one compressed, serialized chunk per variable).
      rdx: the index file's bytes (a serialized, usually gzipped, named list whose
        ``variables`` entry maps each name to its chunk's ``(offset, length)``).
      where: file name stem for error messages.

    Returns:
      ``{name: value}`` with values as `RObject` (or str/None for bare strings).

    Raises:
      FormatError: the bytes are not a consistent lazy-load database.

    Example:
      >>> import zlib
      >>> from jaxnets.data import read_lazyload
      >>> i = lambda *ints: b"".join(n.to_bytes(4, "big", signed=True) for n in ints)
      >>> head = b"X\\n" + i(2, 0x040200, 0x020300)  # XDR format 2, written by R 4.2.0
      >>> rdb = i(len(head) + 16) + zlib.compress(head + i(13, 2, 7, 8))  # x <- c(7L, 8L)
      >>> def names(tag, name):  # a names attribute: tagged pairlist cell, one string
      ...     return i(2 | 1 << 10) + tag + i(16, 1, 9, len(name)) + name.encode() + i(254)
      >>> spans = i(19 | 1 << 9, 1, 13, 2, 0, len(rdb)) + names(i(1, 9, 5) + b"names", "x")
      >>> rdx = head + i(19 | 1 << 9, 1) + spans + names(i(255 | 1 << 8), "variables")
      >>> read_lazyload(rdb, rdx)["x"].value.tolist()
      [7, 8]
    """
    index = unserialize(_open_index(bytes(rdx), f"{where}.rdx"), f"{where}.rdx")
    if not isinstance(index, RObject) or index.kind != "list" or not index.names:
        raise FormatError(f"{where}.rdx: expected a named list (variables, references, ...).")
    entries = dict(zip(index.names, index.value, strict=False))
    variables, compressed = entries.get("variables"), entries.get("compressed")
    if not isinstance(variables, RObject) or variables.kind != "list":
        raise FormatError(f"{where}.rdx: no 'variables' list.")
    code = 1
    if (
        isinstance(compressed, RObject)
        and compressed.kind in _KINDS_NUMERIC
        and len(compressed.value)
        and np.isfinite(compressed.value[0])  # NaN/Inf: int() would raise
    ):
        code = int(compressed.value[0])
    out = {}
    for name, span in zip(variables.names or [], variables.value, strict=False):
        if not isinstance(span, RObject) or span.kind not in _KINDS_NUMERIC or len(span.value) != 2:
            raise FormatError(f"{where}.rdx: entry {name!r} is not (offset, length).")
        if not np.all(np.isfinite(span.value)):
            raise FormatError(f"{where}.rdx: entry {name!r} has a missing offset or length.")
        offset, length = (int(v) for v in span.value)
        if offset < 0 or length < 4 or offset + length > len(rdb):
            raise FormatError(
                f"{where}.rdb: entry {name!r} spans [{offset}, {offset + length}) outside "
                f"the {len(rdb)}-byte file."
            )
        chunk = decompress_chunk(rdb[offset : offset + length], code, f"{where}.rdb:{name}")
        out[str(name)] = unserialize(chunk, f"{where}.rdb:{name}")
    return out


_KINDS_NUMERIC = ("integer", "double", "logical")
