"""TensorBoard event files, read back with TensorBoard's own EventAccumulator."""

import flax.linen as nn
import numpy as np
import pytest

from jaxnets.callbacks import TensorBoard
from jaxnets.keras import Model

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def _reader(path):
    acc = event_accumulator.EventAccumulator(
        str(path), size_guidance={"scalars": 0, "histograms": 0}
    )
    acc.Reload()
    return acc


def test_scalars_learning_rate_and_histograms(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    model = Model(nn.Dense(2))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  learning_rate=0.02)  # fmt: skip
    history = model.fit(
        x, y, epochs=3, validation_data=(x[:10], y[:10]), verbose=0,
        callbacks=[TensorBoard(tmp_path, histogram_freq=2)],
    )  # fmt: skip
    train = _reader(tmp_path / "train")
    tags = train.Tags()
    assert {"epoch_loss", "epoch_accuracy", "epoch_learning_rate"} <= set(tags["scalars"])
    loss = train.Scalars("epoch_loss")
    assert [e.step for e in loss] == [0, 1, 2]
    np.testing.assert_allclose([e.value for e in loss], history.history["loss"], rtol=1e-6)
    np.testing.assert_allclose([e.value for e in train.Scalars("epoch_learning_rate")], 0.02)
    val = _reader(tmp_path / "validation")
    np.testing.assert_allclose(
        [e.value for e in val.Scalars("epoch_loss")], history.history["val_loss"], rtol=1e-6
    )
    # histograms at epochs 0 and 2, one per parameter, of the weights at that time
    assert sorted(tags["histograms"]) == ["params/bias", "params/kernel"]
    kernel = train.Histograms("params/kernel")
    assert [e.step for e in kernel] == [0, 2]
    h = kernel[-1].histogram_value
    w = np.asarray(model.state.params["kernel"])
    assert h.num == w.size and h.max == pytest.approx(w.max()) and h.min == pytest.approx(w.min())
    assert h.sum == pytest.approx(w.sum(), abs=1e-5) and sum(h.bucket) == w.size


def test_batch_scalars(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    model = Model(nn.Dense(2))
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    tb = TensorBoard(tmp_path, update_freq=2)
    model.fit(x, y, epochs=2, batch_size=8, log_every=2, callbacks=[tb], verbose=0)
    steps = [e.step for e in _reader(tmp_path / "train").Scalars("batch_loss")]
    # every 2 steps, as in Keras: the epoch's last step (8, 16) too, with the epoch's logs
    assert steps == [2, 4, 6, 8, 10, 12, 14, 16]
