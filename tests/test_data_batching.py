"""Batching: coverage per epoch, padding and mask, determinism, exact resumption."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxnets.data.batching import (
    bucket_by_length,
    epoch_order,
    iterate_batches,
    iterate_bucketed,
    num_batches,
    pad_to,
)
from jaxnets.errors import ConfigError, DataError, ShapeError


def _arrays(n):
    # Row i of x is [i, -i], so any row can be traced back to its source index.
    return {"x": np.stack([np.arange(n), -np.arange(n)], axis=1), "y": np.arange(n) * 10}


def _seen(batches):
    return np.concatenate([b["x"][b["mask"] > 0, 0] for b in batches])


@settings(max_examples=60, deadline=None, database=None)
@given(
    st.integers(1, 40),
    st.integers(1, 12),
    st.none() | st.integers(0, 3),
    st.integers(0, 3),
)
def test_every_sample_exactly_once_per_epoch(n, batch_size, seed, epoch):
    batches = list(iterate_batches(_arrays(n), batch_size, shuffle_seed=seed, epoch=epoch))
    assert len(batches) == num_batches(n, batch_size) == -(-n // batch_size)
    for b in batches:
        assert b["x"].shape == (batch_size, 2) and b["y"].shape == (batch_size,)
        assert b["mask"].dtype == np.float32 and b["mask"].shape == (batch_size,)
        assert np.array_equal(b["y"], b["x"][:, 0] * 10)  # rows stay aligned across keys
    assert sorted(_seen(batches).tolist()) == list(range(n))
    # Only the last batch is padded, with exactly the missing rows.
    masks = np.concatenate([b["mask"] for b in batches])
    assert masks.tolist() == [1.0] * n + [0.0] * (len(masks) - n)


def test_padding_repeats_row_zero():
    batches = list(iterate_batches(_arrays(5), 4, shuffle_seed=3))
    last = batches[-1]
    assert last["mask"].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert (last["x"][1:] == np.array([0, 0])).all() and (last["y"][1:] == 0).all()


def test_unshuffled_order_is_the_given_order():
    batches = list(iterate_batches(_arrays(7), 3))
    assert [b["x"][:, 0].tolist() for b in batches] == [[0, 1, 2], [3, 4, 5], [6, 0, 0]]


def test_permutation_is_the_documented_function_of_seed_and_epoch():
    batches = list(iterate_batches(_arrays(10), 10, shuffle_seed=7, epoch=2))
    expected = np.random.default_rng([7, 2]).permutation(10)
    assert batches[0]["x"][:, 0].tolist() == expected.tolist()
    assert np.array_equal(epoch_order(10, 7, 2), expected)


def test_same_seed_and_epoch_same_batches_other_epoch_differs():
    run = lambda e: [
        b["x"].tolist() for b in iterate_batches(_arrays(50), 8, shuffle_seed=1, epoch=e)
    ]
    assert run(0) == run(0)
    assert run(0) != run(1)


@pytest.mark.parametrize("start", [0, 1, 3, 6, 7])
def test_start_step_resumes_exactly(start):
    arrays = _arrays(50)
    full = list(iterate_batches(arrays, 8, shuffle_seed=4, epoch=3))
    resumed = list(iterate_batches(arrays, 8, shuffle_seed=4, epoch=3, start_step=start))
    assert len(resumed) == len(full) - start
    for a, b in zip(full[start:], resumed, strict=True):
        assert all(np.array_equal(a[k], b[k]) for k in a)


def test_existing_mask_and_weight_are_permuted_and_combined():
    n = 6
    arrays = {
        "x": np.arange(n),
        "mask": np.array([1, 0, 1, 1, 0, 1], np.float32),
        "weight": np.arange(n, dtype=np.float32) + 1.0,
    }
    batches = list(iterate_batches(arrays, 4, shuffle_seed=0))
    mask = np.concatenate([b["mask"] for b in batches])
    x = np.concatenate([b["x"] for b in batches])
    weight = np.concatenate([b["weight"] for b in batches])
    # Real rows keep their own mask; the two padding rows get mask 0 and weight 0.
    assert np.array_equal(mask[:n], arrays["mask"][x[:n]])
    assert mask[n:].tolist() == [0.0, 0.0] and weight[n:].tolist() == [0.0, 0.0]
    assert np.array_equal(weight[:n], x[:n] + 1.0)


def test_drop_remainder():
    batches = list(iterate_batches(_arrays(10), 4, drop_remainder=True))
    assert len(batches) == 2 == num_batches(10, 4, drop_remainder=True)
    assert all(b["mask"].all() for b in batches)


def test_multi_dim_keys_like_x_mask_travel_with_rows():
    arrays = {"x": np.arange(5), "x_mask": np.arange(5)[:, None] > np.arange(3)[None, :]}
    for b in iterate_batches(arrays, 2, shuffle_seed=0):
        assert np.array_equal(b["x_mask"], b["x"][:, None] > np.arange(3)[None, :])


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"batch_size": 0}, ConfigError),
        ({"batch_size": 2.0}, ConfigError),
        ({"batch_size": 2, "start_step": 4}, ConfigError),
        ({"batch_size": 2, "start_step": -1}, ConfigError),
        ({"batch_size": 2, "shuffle_seed": -1}, ConfigError),
    ],
)
def test_bad_arguments(kwargs, error):
    with pytest.raises(error):
        list(iterate_batches(_arrays(5), **kwargs))


def test_bad_arrays():
    with pytest.raises(ShapeError, match="same number of rows"):
        list(iterate_batches({"x": np.zeros(3), "y": np.zeros(4)}, 2))
    with pytest.raises(ShapeError, match="'mask' must have shape"):
        list(iterate_batches({"x": np.zeros(3), "mask": np.zeros((3, 1))}, 2))
    with pytest.raises(DataError):
        list(iterate_batches({}, 2))


def test_pad_to():
    out = pad_to({"x": np.array([[1.0], [2.0]]), "mask": np.array([1.0, 0.0])}, 4)
    assert out["x"].ravel().tolist() == [1.0, 2.0, 1.0, 1.0]
    assert out["mask"].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert pad_to(np.array([5, 6]), 3).tolist() == [5, 6, 5]
    with pytest.raises(ShapeError):
        pad_to(np.array([1, 2, 3]), 2)


def test_bucket_by_length():
    lengths = [1, 4, 5, 8, 9, 2, 20]
    buckets = bucket_by_length(lengths, [4, 8])
    assert {k: v.tolist() for k, v in buckets.items()} == {4: [0, 1, 5], 8: [2, 3], 20: [4, 6]}
    with pytest.raises(ConfigError):
        bucket_by_length(lengths, [8, 4])


def test_iterate_bucketed_covers_everything_and_cuts_to_bucket_length():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 17, size=30)
    x = np.where(np.arange(16)[None, :] < lengths[:, None], 1.0, 0.0)
    arrays = {"x": x, "id": np.arange(30)}
    batches = list(iterate_bucketed(arrays, lengths, [4, 8, 12], 4, shuffle_seed=2))
    seen = np.concatenate([b["id"][b["mask"] > 0] for b in batches])
    assert sorted(seen.tolist()) == list(range(30))
    for b in batches:
        real = b["mask"] > 0
        assert b["x"].shape[0] == 4 and b["x"].shape[1] in (4, 8, 12, 16)
        # No real step is cut: each row keeps all of its ones.
        assert np.array_equal(b["x"][real].sum(axis=1), lengths[b["id"][real]])
    again = list(iterate_bucketed(arrays, lengths, [4, 8, 12], 4, shuffle_seed=2, start_step=3))
    assert all(np.array_equal(a["id"], b["id"]) for a, b in zip(batches[3:], again, strict=True))
