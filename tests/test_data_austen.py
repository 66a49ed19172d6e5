"""R lazy-load reader and the Austen dataset, on hand-encoded R data and the real package."""

import gzip
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxnets import data
from jaxnets.data import austen
from jaxnets.data.rdata import RObject, decompress_chunk, read_lazyload, unserialize
from jaxnets.errors import DatasetNotFoundError, FormatError

FUZZ = settings(
    max_examples=200, deadline=1000, database=None, suppress_health_check=[HealthCheck.too_slow]
)

# A minimal R XDR serializer, written from the format notes, to build test inputs.
I = lambda v: struct.pack(">i", v)
NIL = I(254)


def chars(s):
    if s is None:
        return I(9) + I(-1)
    raw = s.encode()
    return I(9 | (8 << 12)) + I(len(raw)) + raw  # UTF8 encoding level


def strsxp(items):
    return I(16) + I(len(items)) + b"".join(chars(s) for s in items)


def intsxp(values):
    return I(13) + I(len(values)) + b"".join(I(v) for v in values)


def names_attr(names, first_use=True):
    # Pairlist cell with a tag: the symbol 'names' (or a reference to it), then the value.
    tag = I(1) + chars("names") if first_use else I(255 | (1 << 8))
    return I(2 | (1 << 10)) + tag + strsxp(names) + NIL


def named_list(names, items, first_use=True):
    body = I(19 | (1 << 9)) + I(len(items)) + b"".join(items)
    return body + names_attr(names, first_use)


def serialize(item, version=2):
    head = b"X\n" + I(version) + I(0x040200) + I(0x020300)
    if version == 3:
        head += I(5) + b"UTF-8"
    return head + item


def lazyload_db(objects: dict[str, bytes]) -> tuple[bytes, bytes]:
    """(rdb, rdx) holding each serialized item as a zlib chunk, like R's makeLazyLoadDB."""
    rdb, spans = b"", []
    for item in objects.values():
        payload = serialize(item)
        chunk = struct.pack(">I", len(payload)) + zlib.compress(payload)
        spans.append(intsxp([len(rdb), len(chunk)]))
        rdb += chunk
    # 'variables' comes first in the stream, so it writes the 'names' symbol and the
    # index's own names attribute, written last, refers back to it.
    variables = named_list(list(objects), spans, first_use=True)
    index = named_list(
        ["variables", "references", "compressed"],
        [variables, NIL, I(10) + I(1) + I(1)],
        first_use=False,
    )
    return rdb, gzip.compress(serialize(index))


NOVELS = {
    name: [f"{name.upper()}", "", f"Line one of {name}.", None, "The end."]
    for name in austen.NOVELS
}


@pytest.fixture
def fake_austen(tmp_path):
    rdb, rdx = lazyload_db({name: strsxp(lines) for name, lines in NOVELS.items()})
    folder = tmp_path / "janeaustenr" / "data"
    folder.mkdir(parents=True)
    (folder / "Rdata.rdb").write_bytes(rdb)
    (folder / "Rdata.rdx").write_bytes(rdx)
    return tmp_path


def test_unserialize_vectors_attributes_and_na():
    value = unserialize(serialize(named_list(["a", "b"], [strsxp(["x", None]), intsxp([3])]), 3))
    assert isinstance(value, RObject) and value.kind == "list" and value.names == ["a", "b"]
    assert value.value[0].value == ["x", None]
    assert value.value[1].value.tolist() == [3]
    real = unserialize(serialize(I(14) + I(2) + struct.pack(">dd", 1.5, -2.0)))
    assert real.kind == "double" and real.value.tolist() == [1.5, -2.0]
    assert unserialize(serialize(NIL)) is None


def test_symbol_references_resolve():
    # A list whose 'names' attribute tag is written once, then referenced (REFSXP 1).
    inner = named_list(["k"], [intsxp([1])], first_use=True)
    outer = I(19 | (1 << 9)) + I(1) + inner + names_attr(["outer"], first_use=False)
    value = unserialize(serialize(outer))
    assert value.names == ["outer"] and value.value[0].names == ["k"]
    assert list(value.attributes) == ["names"]


def test_read_lazyload_round_trip():
    rdb, rdx = lazyload_db({"one": strsxp(["a", "b"]), "two": intsxp([5, 6])})
    objects = read_lazyload(rdb, rdx)
    assert objects["one"].value == ["a", "b"] and objects["two"].value.tolist() == [5, 6]


def test_austen_texts_and_dataset_on_fake_package(fake_austen):
    texts = data.load_austen_texts(fake_austen)
    assert list(texts) == list(austen.NOVELS)  # publication order
    assert texts["emma"] == "EMMA\n\nLine one of emma.\n\nThe end."  # NA line -> ""
    full = "\n\n".join(texts.values())
    ds = data.load("austen", data_dir=fake_austen, seq_len=None)
    vocab = ds.class_names
    assert list(vocab) == sorted(set(full)) and ds.num_classes == len(vocab) == ds.vocab_size
    decoded = "".join(vocab[i] for i in ds.x_train) + vocab[ds.y_train[-1]]
    cut = int(len(full) * 0.9)
    assert decoded == full[:cut]  # first 90% is training text, in order
    assert "".join(vocab[i] for i in ds.y_test) == full[cut + 1 :]
    windows = data.load("austen", data_dir=fake_austen, seq_len=16)
    assert windows.x_train.shape[1:] == (16,) and windows.input_shape == (16,)
    assert np.array_equal(windows.x_train[:, 1:], windows.y_train[:, :-1])
    assert windows.task == "language_modeling"


def test_austen_missing_says_how_to_install(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="apt-get download r-cran-janeaustenr"):
        data.load("austen", data_dir=tmp_path)


def test_austen_wrong_objects_is_format_error(tmp_path):
    rdb, rdx = lazyload_db({"emma": intsxp([1])})
    (tmp_path / "Rdata.rdb").write_bytes(rdb)
    (tmp_path / "Rdata.rdx").write_bytes(rdx)
    with pytest.raises(FormatError, match="character vector"):
        data.load_austen_texts(tmp_path)


@pytest.mark.parametrize(
    "blob, message",
    [
        (b"", "truncated"),
        (b"A\n" + I(2) * 3, "not XDR"),
        (b"X\n" + I(7) + I(0) * 2 + NIL, "version"),
        (serialize(I(16) + I(1_000_000)), "does not fit"),
        (serialize(I(255 | (9 << 8))), "unknown object"),
        (serialize(I(21)), "unsupported"),
        (serialize(NIL) + b"\x00", "trailing"),
        (serialize(I(19) + I(1)) + (I(19) + I(1)) * 300 + NIL, "deeply"),
    ],
)
def test_unserialize_malformed(blob, message):
    with pytest.raises(FormatError, match=message):
        unserialize(blob)


def test_lazyload_malformed():
    rdb, rdx = lazyload_db({"one": strsxp(["a"])})
    with pytest.raises(FormatError, match="outside"):
        read_lazyload(rdb[:5], rdx)
    with pytest.raises(FormatError, match="corrupt"):
        read_lazyload(rdb[:4] + b"\x00" * (len(rdb) - 4), rdx)
    with pytest.raises(FormatError, match="named list"):
        read_lazyload(rdb, gzip.compress(serialize(intsxp([1]))))
    with pytest.raises(FormatError, match="corrupt"):
        read_lazyload(rdb, rdx[:20])
    with pytest.raises(FormatError, match="header says"):
        decompress_chunk(struct.pack(">I", 99) + zlib.compress(b"abc"))
    assert decompress_chunk(struct.pack(">I", 3) + b"0abc", compression=3) == b"abc"


def _any(fn, *args):
    try:
        fn(*args)
    except FormatError:
        pass


@FUZZ
@given(st.binary(max_size=200))
def test_fuzz_unserialize_garbage(blob):
    _any(unserialize, b"X\n" + I(2) * 3 + blob)
    _any(unserialize, blob)


@FUZZ
@given(st.data())
def test_fuzz_corrupted_lazyload(draw):
    rdb, rdx = lazyload_db({"one": strsxp(["ab", None]), "two": intsxp([1, 2])})
    rdx = bytearray(gzip.decompress(rdx))
    rdb = bytearray(rdb)
    for blob in (rdx, rdb):
        for _ in range(draw.draw(st.integers(0, 3))):
            blob[draw.draw(st.integers(0, len(blob) - 1))] = draw.draw(st.integers(0, 255))
    _any(read_lazyload, bytes(rdb), bytes(rdx))


def _real_dir():
    try:
        return austen.find_austen_dir()
    except DatasetNotFoundError:
        return None


@pytest.mark.skipif(
    _real_dir() is None,
    reason="janeaustenr not found: apt-get install -y r-cran-janeaustenr, or apt-get download "
    "r-cran-janeaustenr && dpkg-deb -x r-cran-janeaustenr_*.deb DIR and set JAXNETS_DATA=DIR",
)
def test_real_janeaustenr_package():
    texts = data.load_austen_texts()
    assert set(texts) == set(austen.NOVELS)
    assert texts["prideprejudice"].startswith("PRIDE AND PREJUDICE")
    assert "It is a truth universally acknowledged, that a single man" in texts["prideprejudice"]
    assert texts["emma"].startswith("EMMA")
    total = sum(len(t) for t in texts.values())
    assert 3_900_000 < total < 4_100_000  # ~4.0 M characters
    ds = data.load("austen", seq_len=256)
    assert ds.num_classes == 81  # the corpus has 81 distinct symbols
    n_train, n_test = ds.x_train.size, ds.x_test.size
    assert 0.085 < n_test / (n_train + n_test) < 0.105


def test_bzip2_and_xz_chunks():
    import bz2
    import lzma

    payload = serialize(strsxp(["compressed", "chunk"]))
    head = struct.pack(">I", len(payload))
    assert decompress_chunk(head + b"2" + bz2.compress(payload), compression=2) == payload
    filters = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]
    xz = lzma.compress(payload, format=lzma.FORMAT_RAW, filters=filters)
    assert decompress_chunk(head + b"Z" + xz, compression=3) == payload
    with pytest.raises(FormatError, match="type"):
        decompress_chunk(head + b"Q" + xz, compression=3)
