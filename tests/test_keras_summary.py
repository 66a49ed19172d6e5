"""summary(): shapes, parameter counts and XLA's FLOP counts against hand computations."""

import pytest

from jaxnets import layers
from jaxnets.keras import Sequential
from jaxnets.keras.summary import summarize


def test_dense_forward_flops_are_twice_the_multiply_adds():
    model = Sequential([
        layers.Dense(64, input_shape=(32,)),
        layers.Dense(64),
        layers.Dense(10),
    ])  # fmt: skip
    batch = 16
    macs = batch * (32 * 64 + 64 * 64 + 64 * 10)
    s = summarize(model, batch_size=batch)
    assert s.forward_flops == pytest.approx(2 * macs, rel=0.05)
    assert s.trainable_params == 32 * 64 + 64 + 64 * 64 + 64 + 64 * 10 + 10
    assert s.non_trainable_params == 0
    assert [r.output_shape for r in s.rows] == ["(None, 64)", "(None, 64)", "(None, 10)"]
    assert [r.params for r in s.rows] == [32 * 64 + 64, 64 * 64 + 64, 64 * 10 + 10]
    printed = []
    model.summary(print_fn=printed.append)
    assert "layers_2 (Dense)" in printed[0] and "Forward pass FLOPs" in printed[0]


@pytest.mark.slow
def test_summary_of_a_compiled_cnn():
    model = Sequential([
        layers.Conv2D(4, (3, 3), activation="relu", input_shape=(8, 8, 1)),
        layers.BatchNormalization(),
        layers.MaxPooling2D((2, 2)),
        layers.Flatten(),
        layers.Dense(3, activation="softmax"),
    ])  # fmt: skip
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    s = summarize(model, batch_size=2)
    assert [r.kind for r in s.rows] == [
        "Conv2D", "BatchNormalization", "MaxPooling2D", "Flatten", "Dense",
    ]  # fmt: skip
    assert [r.output_shape for r in s.rows] == [
        "(None, 6, 6, 4)", "(None, 6, 6, 4)", "(None, 3, 3, 4)", "(None, 36)", "(None, 3)",
    ]  # fmt: skip
    # BatchNorm: scale and bias are trained; mean and var are not
    assert s.non_trainable_params == 8
    assert s.trainable_params == (9 * 4 + 4) + 8 + (36 * 3 + 3)
    assert s.rows[1].params == 16
    # a training step costs more than a forward pass, and XLA can say how much memory it needs
    conv_macs = 2 * 6 * 6 * 9 * 4
    assert s.forward_flops >= 2 * (conv_macs + 2 * 36 * 3)
    assert s.train_step_flops > 2 * s.forward_flops
    assert s.train_step_bytes > 4 * s.trainable_params
    out = str(s)
    assert "Total params: 167" in out and "Non-trainable params: 8" in out
    assert "Training step FLOPs" in out and "layers_1 (BatchNormalization)" in out
