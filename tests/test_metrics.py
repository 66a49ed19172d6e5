"""Metrics against scikit-learn on random predictions, over masked uneven batches."""

import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import metrics as skm

from jaxnets import metrics
from jaxnets.errors import UnknownNameError

N, C, BATCH = 103, 5, 16  # 103 rows in batches of 16: the last one has 7 real rows.


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _accumulate(metric, probs, labels, weights=None):
    """Feeds padded, masked batches of 16 rows and merges the sums."""
    total = None
    for start in range(0, len(labels), BATCH):
        p, y = probs[start : start + BATCH], labels[start : start + BATCH]
        w = np.ones(len(y)) if weights is None else weights[start : start + BATCH]
        pad = BATCH - len(y)
        # Padding rows hold garbage that the mask must hide.
        p = np.concatenate([p, np.full((pad,) + p.shape[1:], 0.3)])
        y = np.concatenate([y, np.zeros((pad,) + y.shape[1:], y.dtype)])
        w = np.concatenate([w, np.zeros(pad)])
        sums = metric.update(jnp.asarray(p), jnp.asarray(y), jnp.asarray(w, jnp.float32))
        total = sums if total is None else metrics.merge(total, sums)
    return np.asarray(metric.compute(total))


@pytest.fixture
def preds():
    rng = np.random.default_rng(1)
    probs = _softmax(rng.normal(size=(N, C)) * 2).astype(np.float32)
    labels = rng.integers(0, C, size=N).astype(np.int32)
    return probs, labels


@pytest.mark.parametrize("average", ["macro", "micro", "weighted", None])
@pytest.mark.parametrize("which", ["precision", "recall", "f1"])
def test_precision_recall_f1_match_sklearn(preds, which, average):
    probs, labels = preds
    name = f"{which}_{average or 'per_class'}"
    got = _accumulate(metrics.get(name), probs, labels)
    sk = {"precision": skm.precision_score, "recall": skm.recall_score, "f1": skm.f1_score}[which]
    want = sk(labels, probs.argmax(-1), average=average, zero_division=0)
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_binary_average_matches_sklearn():
    rng = np.random.default_rng(2)
    p1 = rng.uniform(size=N).astype(np.float32)
    probs = np.stack([1 - p1, p1], -1)
    labels = rng.integers(0, 2, size=N).astype(np.int32)
    for which, sk in [("precision", skm.precision_score), ("f1", skm.f1_score)]:
        got = _accumulate(metrics.get(f"{which}_binary"), probs, labels)
        np.testing.assert_allclose(got, sk(labels, (p1 > 0.5).astype(int)), atol=1e-6)


def test_accuracy_topk_logloss_confusion_match_sklearn(preds):
    probs, labels = preds
    np.testing.assert_allclose(
        _accumulate(metrics.get("accuracy"), probs, labels),
        skm.accuracy_score(labels, probs.argmax(-1)),
        atol=1e-6,
    )
    np.testing.assert_allclose(
        _accumulate(metrics.TopKAccuracy(k=2), probs, labels),
        skm.top_k_accuracy_score(labels, probs, k=2, labels=range(C)),
        atol=1e-6,
    )
    np.testing.assert_allclose(
        _accumulate(metrics.get("log_loss"), probs, labels),
        skm.log_loss(labels, probs, labels=range(C)),
        atol=1e-6,
    )
    np.testing.assert_array_equal(
        _accumulate(metrics.get("confusion_matrix"), probs, labels),
        skm.confusion_matrix(labels, probs.argmax(-1), labels=range(C)),
    )


def test_sample_weights_match_sklearn(preds):
    probs, labels = preds
    w = np.random.default_rng(3).uniform(0.1, 2.0, size=N)
    got = _accumulate(metrics.get("f1_weighted"), probs, labels, w)
    want = skm.f1_score(labels, probs.argmax(-1), average="weighted", sample_weight=w)
    np.testing.assert_allclose(got, want, atol=1e-6)
    got = _accumulate(metrics.get("accuracy"), probs, labels, w)
    np.testing.assert_allclose(
        got, skm.accuracy_score(labels, probs.argmax(-1), sample_weight=w), atol=1e-6
    )


def test_regression_metrics_match_sklearn():
    rng = np.random.default_rng(4)
    pred = rng.normal(size=(N, 3)).astype(np.float32)
    true = rng.normal(size=(N, 3)).astype(np.float32)
    np.testing.assert_allclose(
        _accumulate(metrics.get("mse"), pred, true), skm.mean_squared_error(true, pred), rtol=1e-5
    )
    np.testing.assert_allclose(
        _accumulate(metrics.get("mae"), pred, true), skm.mean_absolute_error(true, pred), rtol=1e-5
    )


def test_unknown_metric_lists_valid_names():
    with pytest.raises(UnknownNameError, match=r"did you mean 'accuracy'.*Valid metrics: .*f1"):
        metrics.get("acuracy")


def test_compute_members_equals_compute_all_member_by_member(preds):
    """The vectorized per-member compute of a population gives `compute_all`'s values."""
    probs, labels = preds
    table = {name: metrics.get(name) for name in ("accuracy", "f1_macro", "recall_per_class")}
    members = []
    for shift in range(3):  # three members with different predictions
        p = np.roll(probs, shift, axis=0)
        sums = {name: m.update(jnp.asarray(p), jnp.asarray(labels), jnp.ones(N, jnp.float32))
                for name, m in table.items()}  # fmt: skip
        sums["loss"] = {"total": jnp.float32(3.0 + shift), "count": jnp.float32(N)}
        members.append(sums)
    stacked = {k: {f: np.stack([np.asarray(m[k][f]) for m in members]) for f in members[0][k]}
               for k in members[0]}  # fmt: skip
    rows = metrics.compute_members(table, stacked)
    assert len(rows) == 3
    for row, sums in zip(rows, members, strict=True):
        want = metrics.compute_all(table, sums)
        assert sorted(row) == sorted(want)
        for name in want:
            np.testing.assert_allclose(row[name], want[name], rtol=1e-6)
            assert isinstance(row[name], float) == isinstance(want[name], float)


def test_precision_recall_f1_objects_are_named_like_get():
    # Built directly, each object logs under the name `get` gives the same metric, so
    # a run with precision and recall objects does not log both as "f1".
    for which in ("precision", "recall", "f1"):
        for average, suffix in (("macro", ""), ("binary", "_binary"), (None, "_per_class")):
            made = metrics.PrecisionRecallF1(which, average)
            assert made.name == f"{which}{suffix}" == metrics.get(made.name).name
            assert made == metrics.get(made.name)
    assert metrics.PrecisionRecallF1("recall", name="r").name == "r"


def test_a_metric_logs_under_the_keras_name_it_was_given():
    # Keras logs metrics=["acc"] as "acc" (and "val_acc"), so monitor="val_acc" must find it.
    for given in ("acc", "accuracy", "mse", "mae", "sparse_categorical_accuracy"):
        assert metrics.get(given).name == given
