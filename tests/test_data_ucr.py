"""The sktime ``.ts`` reader and the UCR loaders (folder and wheel layouts)."""

import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxnets import data
from jaxnets.data.ucr import parse_ts, read_ts
from jaxnets.errors import DatasetNotFoundError, FormatError

FUZZ = settings(
    max_examples=200, deadline=1000, database=None, suppress_health_check=[HealthCheck.too_slow]
)

TRAIN = """# A comment
% another comment
@problemName Toy
@timeStamps false
@missing true
@univariate false
@dimensions 2
@equalLength false
@classLabel true up down

@data
1,2,3:4,5,6:up
7,?:8,9:down
1.5e1,2,3,4:?,1,2,3:down
"""

TEST = """@problemName Toy
@dimensions 2
@classLabel true up down
@data
0,0:1,1:up
"""


def test_hand_written_file_padding_mask_and_labels():
    ts = parse_ts(TRAIN)
    assert ts.x.shape == (3, 4, 2) and ts.x.dtype == np.float32
    assert ts.problem_name == "Toy" and ts.class_names == ("up", "down")
    assert ts.y.tolist() == [0, 1, 1] and ts.y.dtype == np.int32
    assert ts.lengths.tolist() == [3, 2, 4]
    expected_x = np.array(
        [
            [[1, 4], [2, 5], [3, 6], [0, 0]],
            [[7, 8], [0, 9], [0, 0], [0, 0]],  # '?' becomes 0 and is masked
            [[15, 0], [2, 1], [3, 2], [4, 3]],
        ],
        np.float32,
    )
    np.testing.assert_array_equal(ts.x, expected_x)
    expected_mask = [
        [True, True, True, False],
        [True, False, False, False],
        [False, True, True, True],
    ]
    assert ts.mask.tolist() == expected_mask


def test_regression_and_unlabelled_files():
    reg = parse_ts("@targetLabel true\n@data\n1,2:0.5\n3:-2\n")
    assert reg.y.dtype == np.float32 and reg.y.tolist() == [0.5, -2.0] and reg.class_names is None
    plain = parse_ts("@data\n1,2\n3,4,5\n")
    assert plain.y is None and plain.x.shape == (2, 3, 1)


def test_read_ts_from_bytes_and_path(tmp_path):
    path = tmp_path / "Toy_TRAIN.ts"
    path.write_text(TRAIN)
    assert np.array_equal(read_ts(path).x, read_ts(TRAIN.encode()).x)


@pytest.mark.parametrize(
    "text, message",
    [
        ("1,2:a\n", "@header line before @data"),
        ("@classLabel true a\n", "no @data"),
        ("@classLabel true\n@data\n1:a\n", "distinct class labels"),
        ("@classLabel true a a\n@data\n1:a\n", "distinct class labels"),
        ("@classLabel true a b\n@data\n1,2:c\n", "not in @classLabel"),
        ("@classLabel true a b\n@data\n1,2\n", "values:...:label"),
        ("@classLabel true a\n@data\n1,x:a\n", "not a number"),
        ("@classLabel true a\n@data\n1,,2:a\n", "not a number"),
        ("@classLabel true a\n@data\n1,inf:a\n", "infinite"),
        ("@dimensions 2\n@classLabel true a\n@data\n1:a\n", "1 dimensions, expected 2"),
        ("@classLabel true a\n@data\n1:2:a\n3:a\n", "expected 2"),
        ("@classLabel true a\n@data\n", "no series"),
        ("@targetLabel true\n@data\n1:x\n", "not a finite number"),
        ("@timeStamps true\n@data\n(1,2):a\n", "timestamped"),
        ("@dimensions zero\n@data\n", "positive integer"),
    ],
)
def test_malformed_ts(text, message):
    with pytest.raises(FormatError, match=message):
        parse_ts(text)


@FUZZ
@given(st.text(alphabet="@classLbetruadD:,?.0123456789-\n #", max_size=120))
def test_fuzz_ts_text(text):
    try:
        ts = parse_ts(text)
    except FormatError:
        return
    n, t, _ = ts.x.shape
    assert ts.mask.shape == (n, t) and np.isfinite(ts.x).all()
    assert (ts.lengths >= 1).all() and ts.lengths.max() == t
    assert not ts.mask[np.arange(t)[None, :] >= ts.lengths[:, None]].any()


@FUZZ
@given(st.binary(max_size=120))
def test_fuzz_ts_bytes(blob):
    try:
        read_ts(b"@classLabel true a b\n@data\n" + blob)
    except FormatError:
        pass


def _write_problem(folder, name="Toy"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}_TRAIN.ts").write_text(TRAIN)
    (folder / f"{name}_TEST.ts").write_text(TEST)


def test_load_ucr_from_folder_pads_train_and_test_alike(tmp_path, monkeypatch):
    _write_problem(tmp_path / "ucr" / "Toy")
    monkeypatch.setenv("JAXNETS_DATA", str(tmp_path))
    ds = data.load_ucr("Toy")
    assert ds.x_train.shape == (3, 4, 2) and ds.x_test.shape == (1, 4, 2)
    assert ds.input_shape == (4, 2) and ds.num_classes == 2 and ds.task == "classification"
    assert ds.x_mask_test.tolist() == [[True, True, False, False]]
    assert set(ds.arrays("train")) == {"x", "y", "x_mask"}


def test_load_ucr_from_wheel(tmp_path, monkeypatch):
    wheel = tmp_path / "sktime-0.0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("sktime/datasets/data/GunPoint/GunPoint_TRAIN.ts", TRAIN)
        zf.writestr("sktime/datasets/data/GunPoint/GunPoint_TEST.ts", TEST)
    monkeypatch.setenv("JAXNETS_DATA", str(tmp_path))
    ds = data.load("gunpoint")
    assert ds.name == "GunPoint" and ds.y_train.tolist() == [0, 1, 1]


def test_missing_problem_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXNETS_DATA", str(tmp_path))
    monkeypatch.setenv("JAXNETS_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DatasetNotFoundError, match="pip download --no-deps sktime -d"):
        data.load("italy_power_demand")


def test_broken_wheel_is_format_error(tmp_path, monkeypatch):
    (tmp_path / "sktime-9.9-py3-none-any.whl").write_bytes(b"not a zip")
    monkeypatch.setenv("JAXNETS_DATA", str(tmp_path))
    with pytest.raises(FormatError, match="wheel"):
        data.load("gunpoint")


def _has_real(name):
    try:
        data.load(name)
    except DatasetNotFoundError:
        return False
    return True


@pytest.mark.skipif(
    not _has_real("japanese_vowels"),
    reason="sktime wheel not found: pip download --no-deps sktime -d DIR; export JAXNETS_DATA=DIR",
)
def test_real_ucr_problems():
    gun = data.load("gunpoint")
    assert gun.x_train.shape == (50, 150, 1) and gun.x_test.shape == (150, 150, 1)
    assert gun.x_mask_train.all() and set(gun.y_train.tolist()) == {0, 1}
    vowels = data.load("japanese_vowels")
    assert vowels.x_train.shape[0] == 270 and vowels.x_test.shape[0] == 370
    assert vowels.input_shape[1] == 12 and vowels.num_classes == 9
    lengths = vowels.x_mask_train.sum(axis=1)
    assert 7 <= lengths.min() < lengths.max() <= vowels.input_shape[0]  # variable length


def test_values_beyond_float32_are_a_format_error():
    # Found by fuzzing: numpy's cast to float32 overflowed to inf with only a warning.
    import pytest

    from jaxnets.data.ucr import parse_ts
    from jaxnets.errors import FormatError

    with pytest.raises(FormatError, match="outside the float32 range"):
        parse_ts("@data\n3.4028235677973366e+38\n")
