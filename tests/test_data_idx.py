"""IDX reader/writer: round trips, the real Fashion-MNIST files, malformed input."""

import gzip
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxnets.data.idx import read_idx, write_idx
from jaxnets.data.sources_idx import FASHION_DEB_DIR
from jaxnets.errors import FormatError

FUZZ = settings(
    max_examples=200,
    deadline=1000,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "float32", "float64"])
@pytest.mark.parametrize("compress", [False, True])
def test_round_trip_every_type(dtype, compress, rng):
    array = (rng.normal(size=(3, 4, 5)) * 50).astype(dtype)
    assert np.array_equal(read_idx(write_idx(array, compress=compress)), array)


def test_header_is_the_documented_layout():
    # Hand-encoded: magic 0 0, type 0x0C (int32), 2 dims, dims 2 and 1, big-endian data.
    blob = bytes([0, 0, 0x0C, 2]) + struct.pack(">II", 2, 1) + struct.pack(">ii", -7, 65536)
    assert write_idx(np.array([[-7], [65536]], np.int32)) == blob
    out = read_idx(blob)
    assert out.dtype == np.int32 and out.dtype.isnative
    assert out.tolist() == [[-7], [65536]]


def test_reads_paths_gzip_and_raw(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(array, tmp_path / "a-idx3-ubyte")
    write_idx(array, tmp_path / "a-idx3-ubyte.gz", compress=True)
    assert np.array_equal(read_idx(tmp_path / "a-idx3-ubyte"), array)
    assert np.array_equal(read_idx(str(tmp_path / "a-idx3-ubyte.gz")), array)


def test_limit_reads_leading_rows_only():
    array = np.arange(40, dtype=np.uint8).reshape(10, 4)
    assert np.array_equal(read_idx(write_idx(array, compress=True), limit=3), array[:3])
    assert read_idx(write_idx(array), limit=0).shape == (0, 4)
    with pytest.raises(FormatError, match="limit"):
        read_idx(write_idx(array), limit=11)


@pytest.mark.parametrize(
    "blob, message",
    [
        (b"", "truncated"),
        (b"\x00\x00", "truncated"),
        (b"\x01\x00\x08\x01" + b"\x00\x00\x00\x01" + b"x", "bytes 0-1"),
        (b"\x00\x00\x07\x01" + b"\x00\x00\x00\x01" + b"x", "type byte"),
        (b"\x00\x00\x08\x00", "0 dimensions"),
        (b"\x00\x00\x08\x02\x00\x00\x00\x02", "truncated IDX dims"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x03ab", "expected 3 bytes, found 2"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x01ab", "after the 1-byte payload"),
        (b"\x00\x00\x08\x03" + b"\xff\xff\xff\xff" * 3, "max_bytes"),
        (b"\x1f\x8b\x08\x00garbage", "gzip"),
        (gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x05ab", mtime=0), "truncated"),
    ],
)
def test_malformed_input_raises_format_error(blob, message):
    with pytest.raises(FormatError, match=message):
        read_idx(blob)


def test_truncated_gzip_stream_is_a_format_error():
    blob = write_idx(np.zeros((50, 50), np.uint8), compress=True)
    for cut in (5, len(blob) // 2, len(blob) - 4):
        with pytest.raises(FormatError):
            read_idx(blob[:cut])


def test_format_error_is_a_value_error_and_missing_path_is_not():
    with pytest.raises(ValueError):
        read_idx(b"junk")
    with pytest.raises(FileNotFoundError):
        read_idx("/nonexistent/train-images-idx3-ubyte.gz")


def test_writer_rejects_what_idx_cannot_hold():
    with pytest.raises(FormatError, match="dtype"):
        write_idx(np.zeros(3, np.int64))
    with pytest.raises(FormatError, match="dimensions"):
        write_idx(np.float32(1.0))


def _check_any_bytes(blob):
    try:
        out = read_idx(blob)
    except FormatError:
        return
    # Anything accepted must be exactly what its header declares.
    assert isinstance(out, np.ndarray)
    raw = gzip.decompress(blob) if blob[:2] == b"\x1f\x8b" else blob
    assert raw[0] == raw[1] == 0 and raw[3] == out.ndim
    assert len(raw) == 4 + 4 * out.ndim + out.nbytes


@FUZZ
@given(st.binary(max_size=64))
def test_fuzz_random_bytes(blob):
    _check_any_bytes(blob)


@FUZZ
@given(
    st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x0A]),
    st.lists(st.integers(0, 4), min_size=0, max_size=3),
    st.binary(max_size=80),
    st.booleans(),
)
def test_fuzz_plausible_headers(type_byte, dims, tail, compress):
    blob = bytes([0, 0, type_byte, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims)
    blob += tail
    _check_any_bytes(gzip.compress(blob) if compress else blob)


@FUZZ
@given(st.data())
def test_fuzz_corrupted_valid_files(data):
    blob = bytearray(write_idx(np.arange(12, dtype=np.int16).reshape(3, 4), compress=True))
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(blob) - 1))
        blob[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(blob)))
    _check_any_bytes(bytes(blob[:cut]))


fashion_files = pytest.mark.skipif(
    not (FASHION_DEB_DIR / "train-images-idx3-ubyte.gz").is_file(),
    reason="Fashion-MNIST not installed: apt-get install -y dataset-fashion-mnist "
    f"(puts the IDX files in {FASHION_DEB_DIR})",
)


@fashion_files
def test_real_fashion_mnist_files():
    images = read_idx(FASHION_DEB_DIR / "train-images-idx3-ubyte.gz")
    labels = read_idx(FASHION_DEB_DIR / "train-labels-idx1-ubyte.gz")
    assert images.shape == (60000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (60000,) and set(np.unique(labels)) == set(range(10))
    assert np.bincount(labels).tolist() == [6000] * 10  # balanced by construction
    test = read_idx(FASHION_DEB_DIR / "t10k-images-idx3-ubyte.gz", limit=5)
    assert test.shape == (5, 28, 28)
