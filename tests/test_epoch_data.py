"""Data drawn afresh each epoch: `fit(epoch_data=...)` and Keras-style generators."""

import flax.linen as nn
import numpy as np
import pytest

from jaxnets import layers
from jaxnets.errors import ConfigError, DataError
from jaxnets.keras import Sequential
from jaxnets.training import create_train_state, fit


def _rows(offset, n=12):
    rng = np.random.default_rng(offset)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int32)


def test_epoch_data_trains_each_epoch_on_its_own_rows():
    # Oracle: epochs 1 and 2 on their own data are two one-epoch fits in a row.
    def state():
        return create_train_state(nn.Dense(2), "sgd", _rows(0)[0][:1], learning_rate=0.1)

    swapped, _ = fit(state(), _rows(0), epochs=2, batch_size=5, verbose=0, shuffle=False,
                     epoch_data=lambda epoch: _rows(epoch))  # fmt: skip
    ref, _ = fit(state(), _rows(0), epochs=1, batch_size=5, verbose=0, shuffle=False)
    ref, _ = fit(ref, _rows(1), epochs=2, initial_epoch=1, batch_size=5, verbose=0, shuffle=False)
    np.testing.assert_array_equal(swapped.params["kernel"], ref.params["kernel"])


def test_epoch_data_must_keep_the_shapes():
    state = create_train_state(nn.Dense(2), "sgd", _rows(0)[0][:1], learning_rate=0.1)
    with pytest.raises(DataError, match=r"x: \(12, 3\) float32 then \(10, 3\) float32"):
        fit(state, _rows(0), epochs=2, batch_size=5, verbose=0,
            epoch_data=lambda epoch: _rows(epoch, n=10))  # fmt: skip


def test_epoch_data_is_refused_where_a_mode_cannot_swap_data():
    state = create_train_state(nn.Dense(2), "sgd", _rows(0)[0][:1], learning_rate=0.1)
    with pytest.raises(ConfigError, match="epoch_data= swaps the data between epochs"):
        fit(state, _rows(0), epochs=2, fuse="run", verbose=0, epoch_data=_rows)


def test_a_generator_with_steps_per_epoch_gives_new_batches_every_epoch():
    # Keras's fit(generator, steps_per_epoch=2, epochs=3) takes batches 0-1, 2-3 and
    # 4-5 of the generator; jaxnets used to replay batches 0-1 in every epoch.
    seen = []

    def batches():
        for i in range(100):
            seen.append(i)
            x = np.full((4, 3), float(i), np.float32)
            yield x, (np.arange(4) % 2).astype(np.int32)

    def model():
        m = Sequential([layers.Dense(2)])
        m.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
        return m

    m = model()
    m.fit(batches(), steps_per_epoch=2, epochs=3, verbose=0)
    assert seen == [0, 1, 2, 3, 4, 5]
    # Oracle: one unshuffled fit per epoch on that epoch's two batches.
    x = np.concatenate([np.full((4, 3), float(i), np.float32) for i in range(6)])
    y = np.tile((np.arange(4) % 2).astype(np.int32), 6)
    ref = model()
    ref.seed = m.seed
    for e in range(3):
        ref.fit(x[8 * e : 8 * e + 8], y[8 * e : 8 * e + 8], batch_size=4, epochs=1,
                shuffle=False, verbose=0)  # fmt: skip
    for a, b in zip(m.get_weights(), ref.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_a_list_of_batches_is_read_once_and_replayed():
    m = Sequential([layers.Dense(2)])
    m.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    data = [(np.ones((4, 3), np.float32), np.zeros(4, np.int32))] * 2
    history = m.fit(data, steps_per_epoch=2, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2
