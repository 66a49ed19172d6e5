"""Losses and metrics against Keras 3.15 (numbers hard-coded), scikit-learn and numpy.

Each test pins a defect found by comparing jaxnets with those oracles: Keras
is not needed at run time, its numbers were observed once and are written here.
"""

import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import metrics as skm

import jaxnets
from jaxnets import layers, losses, metrics
from jaxnets.errors import ConfigError, ShapeError
from jaxnets.keras import compile_utils


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _accumulate(metric, probs, labels, weights, batch=8):
    """Feeds padded, masked batches of ``batch`` rows and merges the sums."""
    total = None
    for start in range(0, len(labels), batch):
        p, y = probs[start : start + batch], labels[start : start + batch]
        w = weights[start : start + batch]
        pad = batch - len(y)
        p = np.concatenate([p, np.full((pad, *p.shape[1:]), 0.3, p.dtype)])
        y = np.concatenate([y, np.zeros((pad, *y.shape[1:]), y.dtype)])
        w = np.concatenate([w, np.zeros(pad, w.dtype)])
        sums = metric.update(jnp.asarray(p), jnp.asarray(y), jnp.asarray(w, jnp.float32))
        total = sums if total is None else metrics.merge(total, sums)
    return float(metric.compute(total))


# -- cross-entropy on probabilities that do not sum to 1 --------------------------------


def test_probability_crossentropy_rescales_outputs_as_keras_does():
    # Sigmoid outputs read by a categorical cross-entropy (from_logits=False):
    # Keras divides them by their sum before the clip and the log.
    x = np.array([[1.0, -2.0, 0.5], [0.3, 0.3, -1.0]], np.float32)
    probs = jnp.asarray(_sigmoid(x))
    one_hot = jnp.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    keras_values = [0.8611886501312256, 0.9034802913665771]  # keras.losses.*_crossentropy
    cce = losses.categorical_crossentropy(probs, one_hot, from_logits=False)
    scce = losses.sparse_categorical_crossentropy(probs, jnp.array([2, 0]), from_logits=False)
    np.testing.assert_allclose(cce, keras_values, rtol=1e-6)
    np.testing.assert_allclose(scce, keras_values, rtol=1e-6)
    # A probability of exactly 1 is clipped to 1 - 1e-7, as Keras's is.
    sure = losses.categorical_crossentropy(
        jnp.array([[1.0, 0.0]]), jnp.array([[1.0, 0.0]]), from_logits=False
    )
    np.testing.assert_allclose(sure, [1.1920928955078125e-07], rtol=1e-6)


def test_sigmoid_model_with_categorical_crossentropy_evaluates_as_keras():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(11, 4)).astype(np.float32)
    y = rng.integers(0, 3, 11)
    model = jaxnets.Sequential([layers.Dense(3, activation="sigmoid", input_shape=(4,))])
    model.compile("sgd", loss="sparse_categorical_crossentropy")
    model.build((None, 4))
    p = np.asarray(model.predict(x, verbose=0), np.float64)
    p = np.clip(p / p.sum(-1, keepdims=True), 1e-7, 1 - 1e-7)
    want = -np.log(p[np.arange(11), y]).mean()
    got = model.evaluate(x, y, batch_size=4, verbose=0)
    np.testing.assert_allclose(got, want, rtol=1e-5)


# -- per-step losses leave masked steps out --------------------------------------------


def _masked_sequences(n=7, t=5, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, 6, size=(n, t))
    for i in range(n):
        tokens[i, rng.integers(1, t) :] = 0  # padding after 1..t-1 real steps
    return tokens, rng


@pytest.mark.parametrize("loss", ["mse", "mae", "huber"])
def test_per_step_regression_loss_skips_masked_steps(loss):
    tokens, rng = _masked_sequences()
    y = rng.normal(size=(*tokens.shape, 2)).astype(np.float32)
    model = jaxnets.Sequential(
        [layers.Embedding(6, 4, mask_zero=True, input_shape=(5,)), layers.Dense(2)]
    )
    model.compile("sgd", loss=loss)
    model.build((None, 5), dtype="int32")
    err = np.asarray(model.predict(tokens, verbose=0), np.float64) - y
    per_step = {
        "mse": np.square(err),
        "mae": np.abs(err),
        "huber": np.where(np.abs(err) <= 1, 0.5 * err**2, np.abs(err) - 0.5),
    }[loss].mean(-1)
    want = per_step[tokens != 0].mean()  # Keras: the mean over the real steps only
    got = model.evaluate(tokens, y, batch_size=len(tokens), verbose=0)
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_elementwise_losses_average_the_last_axis_only():
    out, tgt = jnp.ones((2, 3, 4)), jnp.zeros((2, 3, 4))
    for fn in (losses.mean_squared_error, losses.mean_absolute_error, losses.huber):
        assert fn(out, tgt).shape == (2, 3)
    assert losses.binary_crossentropy(out, tgt).shape == (2, 3)
    assert losses.mean_squared_error(jnp.ones((2, 4)), jnp.zeros((2, 4))).shape == (2,)


# -- multi-label binary classifiers ------------------------------------------------------


def test_multilabel_binary_metrics_match_keras():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(13, 4)).astype(np.float32)
    y = rng.integers(0, 2, (13, 3))
    w = rng.uniform(0, 2, 13).astype(np.float32)
    model = jaxnets.Sequential([layers.Dense(3, activation="sigmoid", input_shape=(4,))])
    model.compile(
        "sgd",
        loss="binary_crossentropy",
        metrics=["accuracy", "binary_accuracy", "precision", "recall"],
    )
    model.build((None, 4))
    model.set_weights([3 * v for v in model.get_weights()])
    got = model.evaluate(x, y, sample_weight=w, batch_size=4, verbose=0, return_dict=True)
    p = np.asarray(model.predict(x, verbose=0))
    pred = (p > 0.5).astype(int)
    rows = np.repeat(w, 3)  # every label carries its example's weight
    # Keras's "accuracy" on K > 1 sigmoid outputs is categorical_accuracy (arg-max vs
    # the first 1 of the targets); binary_accuracy and Precision/Recall count every label.
    want = {
        "accuracy": np.average(p.argmax(-1) == y.argmax(-1), weights=w),
        "binary_accuracy": np.average((pred == y).ravel(), weights=rows),
        "precision": skm.precision_score(y.ravel(), pred.ravel(), sample_weight=rows),
        "recall": skm.recall_score(y.ravel(), pred.ravel(), sample_weight=rows),
    }
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-5, err_msg=name)


def test_per_step_binary_metrics_say_what_is_supported():
    loss = losses.get("binary_crossentropy")
    with pytest.raises(ShapeError, match=r"one per label \(B, K\).*per-step outputs"):
        loss.predictions(jnp.zeros((2, 5, 1)))


def test_labels_with_a_trailing_axis_are_one_label_per_row():
    # Labels (B, 1) were compared with (B,) predictions by broadcasting: a (B, B) table.
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4]], np.float32)
    labels = np.array([[0], [1], [0], [0]])
    for name, sk in [
        ("accuracy", skm.accuracy_score),
        ("f1_macro", lambda t, p: skm.f1_score(t, p, average="macro")),
    ]:
        got = _accumulate(metrics.get(name), probs, labels, np.ones(4, np.float32))
        np.testing.assert_allclose(got, sk(labels[:, 0], probs.argmax(-1)), rtol=1e-6)
    with pytest.raises(ShapeError, match=r"labels of shape \(3,\)"):
        metrics.get("accuracy").update(jnp.asarray(probs), jnp.array([0, 1, 0]), jnp.ones(4))


# -- AUC ----------------------------------------------------------------------------------


def _auc_data():
    rng = np.random.default_rng(0)
    p = rng.uniform(size=40).astype(np.float32)
    y = (rng.uniform(size=40) < p).astype(np.int32)
    w = rng.uniform(0, 2, 40).astype(np.float32)
    return np.stack([1 - p, p], -1), y, w


def test_auc_matches_keras_over_padded_batches():
    probs, y, w = _auc_data()
    # keras.metrics.AUC() and AUC(num_thresholds=11), update_state(y, p[, w]) on the same data.
    got = _accumulate(metrics.get("AUC"), probs, y, w)
    np.testing.assert_allclose(got, 0.8489083051681519, rtol=1e-6)
    coarse = _accumulate(metrics.AUC(num_thresholds=11), probs, y, np.ones(40, np.float32))
    np.testing.assert_allclose(coarse, 0.7878788113594055, rtol=1e-6)
    # Within a bin width of the exact area.
    exact = skm.roc_auc_score(y, probs[:, 1], sample_weight=w)
    assert abs(got - exact) < 1e-3


def test_auc_equals_sklearn_when_scores_fall_in_separate_bins():
    rng = np.random.default_rng(5)
    bins = rng.permutation(199)[:30]
    p = ((bins + 0.5) / 199).astype(np.float32)  # one score per threshold interval
    y = rng.integers(0, 2, 30)
    w = rng.uniform(0.1, 2, 30).astype(np.float32)
    got = _accumulate(metrics.AUC(), np.stack([1 - p, p], -1), y, w)
    np.testing.assert_allclose(got, skm.roc_auc_score(y, p, sample_weight=w), rtol=1e-5)


def test_auc_of_several_classes_is_keras_one_vs_rest():
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(4), 30).astype(np.float32)
    y = rng.integers(0, 4, 30)
    # Keras's AUC on one-hot targets counts every (row, class) pair: sklearn's micro average.
    got = _accumulate(metrics.AUC(), probs, y, np.ones(30, np.float32))
    want = skm.roc_auc_score(np.eye(4)[y], probs, average="micro")
    assert abs(got - want) < 2e-3


# -- names, as Keras accepts and logs them ------------------------------------------------


def test_keras_metric_names_are_accepted_and_logged_as_given():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(12, 4)).astype(np.float32)
    y = rng.integers(0, 2, 12)
    model = jaxnets.Sequential([layers.Dense(1, activation="sigmoid", input_shape=(4,))])
    model.compile("sgd", loss="binary_crossentropy", metrics=["AUC", "acc"])
    history = model.fit(x, y, batch_size=5, epochs=1, verbose=0)
    assert set(history.history) == {"loss", "AUC", "acc", "skipped"}
    assert model.metrics_names == ["loss", "AUC", "acc"]
    p = np.asarray(model.predict(x, verbose=0))[:, 0]
    got = model.evaluate(x, y, verbose=0, return_dict=True)["AUC"]
    assert abs(got - skm.roc_auc_score(y, p)) < 1e-2
    # The compile config saves the name as given, and it resolves to the same metric.
    objs = compile_utils.resolve_metrics(["AUC"], None)
    assert compile_utils.config_name(objs[0], metrics.get) == "AUC"


def test_keras_top_k_names_and_classes():
    rng = np.random.default_rng(4)
    probs = rng.dirichlet(np.ones(7), 30).astype(np.float32)
    y = rng.integers(0, 7, 30)
    for name in ("sparse_top_k_categorical_accuracy", "top_k_categorical_accuracy"):
        m = metrics.get(name)
        assert m.name == name
        got = _accumulate(m, probs, y, np.ones(30, np.float32))
        np.testing.assert_allclose(got, skm.top_k_accuracy_score(y, probs, k=5), rtol=1e-6)
    p1 = rng.uniform(size=30).astype(np.float32)
    binary, yb = np.stack([1 - p1, p1], -1), (rng.uniform(size=30) < 0.5).astype(int)
    for cls, sk in [(metrics.Precision, skm.precision_score), (metrics.Recall, skm.recall_score)]:
        got = _accumulate(cls(), binary, yb, np.ones(30, np.float32))
        np.testing.assert_allclose(got, sk(yb, (p1 > 0.5).astype(int)), rtol=1e-6)


def test_metrics_argument_must_be_a_list():
    # A bare name was read letter by letter: "unknown metric 'a'". Keras raises too.
    model = jaxnets.Sequential([layers.Dense(3, activation="softmax", input_shape=(4,))])
    with pytest.raises(ConfigError, match=r"metrics must be a list such as \['accuracy'\]"):
        model.compile("sgd", loss="sparse_categorical_crossentropy", metrics="accuracy")
    # A one-output dict (Keras's {output_name: metrics}) gives its entry.
    model.compile("sgd", loss="sparse_categorical_crossentropy", metrics={"dense": ["acc"]})
    assert model.metrics_names == ["loss", "acc"]


@pytest.mark.parametrize("loss", ["binary_crossentropy", "categorical_crossentropy"])
def test_mse_and_mae_metrics_of_a_classifier_compare_with_the_targets(loss):
    # metrics=["mse", "mae"] on a classifier crashed ("cannot reshape (4,) into (4, 2)");
    # Keras compares the probabilities with the targets (binary: the Brier score).
    rng = np.random.default_rng(6)
    x = rng.normal(size=(13, 4)).astype(np.float32)
    w = rng.uniform(0, 2, 13).astype(np.float32)
    binary = loss == "binary_crossentropy"
    y = rng.integers(0, 2, 13) if binary else np.eye(3)[rng.integers(0, 3, 13)]
    act, units = ("sigmoid", 1) if binary else ("softmax", 3)
    model = jaxnets.Sequential([layers.Dense(units, activation=act, input_shape=(4,))])
    model.compile("sgd", loss=loss, metrics=["mse", "mae"])
    model.build((None, 4))
    p = np.asarray(model.predict(x, verbose=0), np.float64).reshape(13, -1)
    t = y.reshape(13, -1)
    got = model.evaluate(x, y, sample_weight=w, batch_size=4, verbose=0, return_dict=True)
    np.testing.assert_allclose(got["mse"], skm.mean_squared_error(t, p, sample_weight=w), rtol=1e-5)
    np.testing.assert_allclose(
        got["mae"], skm.mean_absolute_error(t, p, sample_weight=w), rtol=1e-5
    )


# Keras 3.15's keras.losses.get(name)(y_true, y_pred) on the arrays of the next test.
_KERAS_LOSSES = {
    "log_cosh": ("reg", "raw", [0.031224450096488, 1.2870280742645264]),
    "kld": ("01", "prob", [0.35667213797569275, 0.6931442022323608]),
    "poisson": ("reg+", "prob", [0.7204644680023193, 2.18172550201416]),
    "hinge": ("01", "raw", [0.8666666746139526, 0.3333333432674408]),
    "squared_hinge": ("01", "raw", [0.9133334159851074, 0.3333333432674408]),
    "categorical_hinge": ("01", "raw", [0.5, 0.0]),
    "cosine_similarity": ("reg", "raw", [-0.9737290143966675, -0.19851669669151306]),
    "mape": ("reg", "raw", [33333362.0, 86.11111450195312]),
    "msle": ("reg", "raw", [0.02842981182038784, 0.6485247611999512]),
}


@pytest.mark.parametrize("name", sorted(_KERAS_LOSSES))
def test_keras_losses_by_name_match_keras(name):
    targets = {
        "01": np.array([[0, 1, 0], [1, 0, 0]], np.float32),
        "reg": np.array([[0.5, 1.0, 0.0], [2.0, 3.0, -1.0]], np.float32),
    }
    targets["reg+"] = targets["reg"].clip(0)
    outputs = {
        "raw": np.array([[0.2, 0.7, 0.1], [2.5, -1.0, 0.0]], np.float32),
        "prob": np.array([[0.2, 0.7, 0.1], [0.5, 0.25, 0.25]], np.float32),
    }
    t, o, want = _KERAS_LOSSES[name]
    got = losses.get(name)(jnp.asarray(outputs[o]), jnp.asarray(targets[t]))
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # Per-step outputs keep one value per step, for the step mask.
    seq = losses.get(name)(jnp.ones((2, 4, 3)) * 0.5, jnp.ones((2, 4, 3)))
    assert seq.shape == (2, 4)


def test_accuracy_with_a_custom_loss_and_column_labels():
    # A custom loss with y of shape (n, 1): "accuracy" compared (B,) arg-maxes with (B, 1)
    # labels by broadcasting and reported 1.0 where the true accuracy was 0.38.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(13, 4)).astype(np.float32)
    y = rng.integers(0, 3, (13, 1))
    model = jaxnets.Sequential([layers.Dense(3, input_shape=(4,))])
    model.compile(
        "sgd", loss=lambda t, p: jnp.mean(jnp.square(p - t), axis=-1), metrics=["accuracy"]
    )
    model.build((None, 4))
    p = np.asarray(model.predict(x, verbose=0))
    _, acc = model.evaluate(x, y, batch_size=4, verbose=0)
    np.testing.assert_allclose(acc, skm.accuracy_score(y[:, 0], p.argmax(-1)), rtol=1e-6)


def test_bad_metric_options_get_clear_errors():
    # average="samples" silently gave the macro average; pos_label=5 of 3 classes was
    # clamped to class 2 by jnp indexing; k=0 gave 0.0 for every batch.
    with pytest.raises(ConfigError, match=r"average must be one of .*got 'samples'"):
        metrics.PrecisionRecallF1("f1", "samples")
    with pytest.raises(ConfigError, match=r"which must be .*got 'f2'"):
        metrics.PrecisionRecallF1("f2")
    with pytest.raises(ConfigError, match=r"k must be an integer >= 1, got 0"):
        metrics.TopKAccuracy(k=0)
    probs = jnp.array([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1]])
    precision = metrics.PrecisionRecallF1("precision", "binary", pos_label=5)
    with pytest.raises(ConfigError, match=r"pos_label 5 is not a class of this 3-class model"):
        precision.update(probs, jnp.array([0, 2]), jnp.ones(2))


def test_a_metric_class_gives_its_default_instance():
    # As keras.metrics.get(keras.metrics.AUC) does; the class itself failed in update().
    assert metrics.get(metrics.AUC) == metrics.AUC()
    probs, y, w = _auc_data()
    got = _accumulate(metrics.get(metrics.AUC), probs, y, w)
    np.testing.assert_allclose(got, 0.8489083051681519, rtol=1e-6)


def test_segmentation_metrics_count_every_pixel():
    # Outputs (B, H, W, C) with labels (B, H, W): the metrics multiplied (B, H, W) hits by
    # (B,) weights, a broadcast error (or, when W == B, wrong numbers).
    rng = np.random.default_rng(7)
    x = rng.normal(size=(6, 3, 5, 2)).astype(np.float32)
    y = rng.integers(0, 3, (6, 3, 5))
    w = rng.uniform(0.5, 2, 6).astype(np.float32)
    model = jaxnets.Sequential([layers.Dense(3, activation="softmax", input_shape=(3, 5, 2))])
    model.compile("sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy", "f1_macro"])
    model.build((None, 3, 5, 2))
    pred = np.asarray(model.predict(x, verbose=0)).argmax(-1).ravel()
    pixels = np.repeat(w, 15)  # each pixel carries its image's weight
    got = model.evaluate(x, y, sample_weight=w, batch_size=4, verbose=0, return_dict=True)
    np.testing.assert_allclose(
        got["accuracy"], skm.accuracy_score(y.ravel(), pred, sample_weight=pixels), rtol=1e-5
    )
    want_f1 = skm.f1_score(y.ravel(), pred, average="macro", sample_weight=pixels)
    np.testing.assert_allclose(got["f1_macro"], want_f1, rtol=1e-5)


def test_per_step_regression_metrics_skip_masked_steps():
    # Keras's masked per-step regression metrics average the real steps only: mae
    # 0.7987 in Keras where jaxnets counted the padded steps too (0.8408).
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 6, size=(7, 5))
    for i in range(7):
        tokens[i, rng.integers(1, 5) :] = 0
    y = rng.normal(size=(7, 5, 2)).astype(np.float32)
    model = jaxnets.Sequential(
        [layers.Embedding(6, 4, mask_zero=True, input_shape=(5,)), layers.Dense(2)]
    )
    model.compile("sgd", loss="mse", metrics=["mae", "mse"])
    model.build((None, 5), dtype="int32")
    err = np.asarray(model.predict(tokens, verbose=0), np.float64) - y
    real = tokens != 0
    got = model.evaluate(tokens, y, batch_size=3, verbose=0, return_dict=True)
    np.testing.assert_allclose(got["mae"], np.abs(err).mean(-1)[real].mean(), rtol=1e-5)
    np.testing.assert_allclose(got["mse"], np.square(err).mean(-1)[real].mean(), rtol=1e-5)
