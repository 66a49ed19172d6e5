"""Fuzzing the file readers: any bytes give a result or a jaxnets error, never another exception.

Random bytes rarely get past a header check, so each reader is also fed inputs
built from its grammar: IDX headers with random types and dimensions, ``.ts``
files from header keys and value tokens (unicode digits, huge and special
numbers among them), and R lazy-load databases from a random tree of R items
whose lengths, flags and index entries may all be wrong.
"""

import gzip
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from jaxnets.data import austen
from jaxnets.data.idx import read_idx, write_idx
from jaxnets.data.rdata import read_lazyload, unserialize
from jaxnets.data.ucr import parse_ts, read_ts
from jaxnets.errors import JaxnetsError

FUZZ = settings(
    max_examples=250,
    deadline=5000,  # a hang shows up as a deadline error, not a stuck run
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
pytestmark = pytest.mark.timeout(300)


def _only_jaxnets_errors(fn, *args):
    try:
        return fn(*args)
    except JaxnetsError:
        return None


# -- IDX ------------------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=300), st.booleans())
def test_idx_any_bytes(blob, compress):
    _only_jaxnets_errors(read_idx, gzip.compress(blob) if compress else blob)


@FUZZ
@given(
    st.integers(0, 255),
    st.lists(st.integers(0, 2**32 - 1) | st.integers(0, 5), max_size=6),
    st.binary(max_size=64),
    st.integers(0, 255),
)
def test_idx_headers_with_any_type_and_dims(type_byte, dims, tail, ndim_lie):
    ndim = len(dims) if ndim_lie > 200 else ndim_lie % 8
    blob = bytes([0, 0, type_byte, ndim]) + b"".join(struct.pack(">I", d) for d in dims) + tail
    out = _only_jaxnets_errors(read_idx, blob)
    if out is not None:
        assert out.ndim == ndim and out.dtype.isnative


@FUZZ
@given(st.data())
def test_idx_limit_on_mutated_files(data):
    blob = bytearray(write_idx(np.arange(24, dtype=np.float32).reshape(2, 3, 4)))
    for _ in range(data.draw(st.integers(0, 4))):
        blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    limit = data.draw(st.none() | st.integers(-2, 5))
    _only_jaxnets_errors(lambda: read_idx(bytes(blob), limit=limit))


# -- .ts ------------------------------------------------------------------------------------

_KEYS = ["@problemName", "@timeStamps", "@missing", "@univariate", "@dimensions"]
_KEYS += ["@equalLength", "@seriesLength", "@classLabel", "@targetLabel", "@data", "@"]
_WORDS = ["true", "false", "a", "b", "1", "3", "0", "-1", "²", "٣", "1e999", "nan", "?", ""]
_VALUES = ["1", "-2.5", "?", "NaN", "nan", "inf", "-inf", "1e309", "1e-320", "", " ", "x"]
_VALUES += ["0x10", "1_0", "٣", "²", "\x00", "a", "b", "1,2", "3:4"]

word = st.sampled_from(_WORDS) | st.text(max_size=6)
header = st.builds(
    lambda key, words: " ".join([key, *words]), st.sampled_from(_KEYS), st.lists(word, max_size=4)
) | st.builds(lambda key, w: f"{key} {w}", st.sampled_from(_KEYS[3:5]), word)
value = st.sampled_from(_VALUES) | st.floats().map(repr) | st.text(max_size=4)
series = st.lists(st.lists(value, min_size=1, max_size=4).map(",".join), min_size=1, max_size=3)
data_line = st.builds(
    lambda dims, label: ":".join(dims + label), series, st.lists(word, max_size=1)
)


@FUZZ
@given(st.lists(header, max_size=5), st.lists(data_line, max_size=5), st.booleans())
@example(["@dimensions ²"], ["1,2"], True)  # found by this test: int('²') raised ValueError
def test_ts_grammar(headers, lines, with_data):
    text = "\n".join(headers + (["@data"] if with_data else []) + lines)
    ts = _only_jaxnets_errors(parse_ts, text)
    if ts is not None:
        assert np.isfinite(ts.x).all() and ts.mask.shape == ts.x.shape[:2]


@FUZZ
@given(st.binary(max_size=300))
def test_ts_any_bytes(blob):
    _only_jaxnets_errors(read_ts, blob)


# -- R lazy-load databases (janeaustenr) ----------------------------------------------------


def I(*values):  # noqa: E743 - big-endian int32s, as R writes them
    return b"".join(struct.pack(">i", v) for v in values)


NIL = I(254)


def chars(s):
    if s is None:
        return I(9, -1)
    raw = s.encode()
    return I(9 | (8 << 12), len(raw)) + raw


def strsxp(items):
    return I(16, len(items)) + b"".join(chars(s) for s in items)


def pairlist(cells, kind=2):
    """Cells of (tag or None, value bytes), each with a has-tag flag, ended by NIL."""
    out = b""
    for tag, item in cells:
        out += I(kind | (1 << 10)) + I(1) + chars(tag) + item if tag else I(kind) + item
    return out + NIL


def with_attrs(kind, body, names_item):
    return I(kind | (1 << 9)) + body + pairlist([("names", names_item)])


text = st.none() | st.text(max_size=6)
int32 = st.integers(-(2**31), 2**31 - 1)
special = st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e300, -1.0, 2.0])
doubles = st.lists(special | st.floats(), max_size=3)
leaf = st.one_of(
    st.lists(int32 | st.integers(-1, 40), max_size=3).map(lambda v: I(13, len(v), *v)),
    doubles.map(lambda v: I(14, len(v)) + b"".join(struct.pack(">d", d) for d in v)),
    st.lists(text, max_size=3).map(strsxp),
    text.map(chars),
    st.sampled_from([NIL, *(I(k) for k in (241, 242, 250, 251, 252, 253))]),
    st.integers(0, 4).map(lambda n: I(255 | (n << 8))),  # references
    st.text(max_size=4).map(lambda s: I(1) + chars(s)),  # symbols
    st.builds(lambda flags, tail: I(flags) + tail, int32, st.binary(max_size=8)),
)


def _nodes(children):
    items = st.lists(children, max_size=3)
    return st.one_of(
        st.builds(
            lambda xs, lie: I(19, len(xs) + lie) + b"".join(xs),
            items,
            st.sampled_from([0, 0, 1, -1, -5]),
        ),  # fmt: skip
        st.builds(
            lambda xs, names: with_attrs(19, I(len(xs)) + b"".join(xs), names), items, children
        ),  # fmt: skip
        st.builds(
            lambda cells, kind: pairlist(cells, kind),
            st.lists(st.tuples(text, children), max_size=3),
            st.sampled_from([2, 6, 239]),
        ),  # fmt: skip
        st.builds(
            lambda parts: I(4, 0) + b"".join(parts), st.lists(children, min_size=4, max_size=4)
        ),  # fmt: skip
    )


r_item = st.recursive(leaf, _nodes, max_leaves=8)


def _serialize(item, version):
    head = b"X\n" + I(version, 0x040200, 0x020300)
    return head + (I(5) + b"UTF-8" if version == 3 else b"") + item


def _chunk(payload, code):
    size = struct.pack(">I", len(payload))
    if code == 1:
        return size + zlib.compress(payload)
    return size + b"0" + payload  # stored chunk (codes 2 and 3)


named_items = st.tuples(st.sampled_from(list(austen.NOVELS)) | st.text(max_size=4), r_item)
numeric = doubles.map(lambda v: I(14, len(v)) + b"".join(struct.pack(">d", d) for d in v))
# Found by this test (each raised a ValueError, AttributeError or OverflowError):
NAN = I(14, 1) + struct.pack(">d", float("nan"))
INF = I(14, 1) + struct.pack(">d", float("inf"))
ARGS = {"objects": [], "code": 1, "span_lie": [], "version": 2, "gz": False}


@FUZZ
@given(
    objects=st.lists(named_items, max_size=3),
    code=st.sampled_from([1, 2, 3]),
    compressed=st.none() | leaf | numeric,  # None: a valid code; else NaN, Inf, NA, junk...
    span_lie=st.lists(int32, max_size=4),
    version=st.sampled_from([2, 3]),
    gz=st.booleans(),
    names_lie=st.none() | leaf,
)
@example(compressed=NAN, names_lie=None, **ARGS)  # int(NaN) of the 'compressed' entry
@example(compressed=INF, names_lie=None, **ARGS)
@example(compressed=None, names_lie=I(13, 0), **ARGS)  # names as an empty integer vector
@example(compressed=None, names_lie=I(13, 2, 1, 2), **ARGS)  # truth value of an array
@example(compressed=None, names_lie=chars(""), **ARGS)  # names as a bare string
def test_rdata_lazyload_grammar(objects, code, compressed, span_lie, version, gz, names_lie):
    rdb, spans = b"", []
    for _, item in objects:
        chunk = _chunk(_serialize(item, version), code)
        offset, length = len(rdb), len(chunk)
        if span_lie:
            offset, length = (span_lie + [offset, length])[:2]
        spans.append(I(13, 2, offset, length))
        rdb += chunk
    names = strsxp([n for n, _ in objects]) if names_lie is None else names_lie
    variables = with_attrs(19, I(len(spans)) + b"".join(spans), names)
    code_item = I(13, 1, code) if compressed is None else compressed
    index = with_attrs(
        19, I(3) + variables + NIL + code_item, strsxp(["variables", "references", "compressed"])
    )
    rdx = _serialize(index, version)
    found = _only_jaxnets_errors(read_lazyload, rdb, gzip.compress(rdx) if gz else rdx)
    if found is not None:
        _only_jaxnets_errors(austen.novels_from_objects, found)


@FUZZ
@given(r_item, st.sampled_from([2, 3]), st.binary(max_size=4))
def test_rdata_unserialize_grammar(item, version, tail):
    _only_jaxnets_errors(unserialize, _serialize(item, version) + tail)


@FUZZ
@given(st.binary(max_size=200), st.binary(max_size=200))
def test_rdata_any_bytes(rdb, rdx):
    _only_jaxnets_errors(read_lazyload, rdb, rdx)
