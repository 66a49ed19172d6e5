"""`jaxnets.tune`: grids, random draws, and a sorted results table."""

import flax.linen as nn
import numpy as np
import pytest

from jaxnets.errors import ConfigError
from jaxnets.training import TrainState, create_train_state
from jaxnets.tune import LogUniform, Uniform, search, trials


def make(seed):
    return create_train_state(nn.Dense(2), "adam", np.zeros((1, 3), np.float32), seed=seed)


def test_search_returns_every_trial_sorted_best_first():
    x = np.random.default_rng(0).normal(size=(48, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    space = {"learning_rate": LogUniform(1e-4, 1e-1), "weight_decay": [0.0, 1e-3]}
    results = search(make, (x, y), space, n_trials=5, population=3, epochs=2, batch_size=16,
                     validation_data=(x, y), verbose=0)  # fmt: skip
    assert sorted(r["trial"] for r in results) == list(range(5))
    losses = [r["val_loss"] for r in results]
    assert losses == sorted(losses)
    assert results.best is results[0] and isinstance(results.best_state, TrainState)
    text = str(results)
    assert text.splitlines()[0].split()[:3] == ["trial", "learning_rate", "weight_decay"]
    assert len(text.splitlines()) == 2 + 5


def test_trials_grid_and_random_draws():
    grid = trials({"a": [1, 2], "b": [3, 4, 5]}, "grid")
    assert len(grid) == 6 and {"a": 2, "b": 5} in grid
    draws = trials({"lr": LogUniform(1e-4, 1e-2), "m": Uniform(0.5, 0.9)}, "random", n=50)
    assert all(1e-4 <= d["lr"] <= 1e-2 and 0.5 <= d["m"] <= 0.9 for d in draws)
    assert draws == trials({"lr": LogUniform(1e-4, 1e-2), "m": Uniform(0.5, 0.9)}, n=50)
    with pytest.raises(ConfigError, match="grid search needs lists"):
        trials({"lr": LogUniform(1e-4, 1e-2)}, "grid")
    with pytest.raises(ConfigError, match="method"):
        trials({"lr": [1.0]}, "bayes")


def test_search_over_the_dropout_rate_trains_each_trial_with_its_rate():
    from jaxnets import models
    from jaxnets.training import fit
    from jaxnets.training.state import set_model_hyperparam

    x = np.random.default_rng(1).normal(size=(48, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    mlp = models.get("mlp", features=(16,), num_classes=2, dropout_rate=0.1, input_shape=(3,))
    make_mlp = lambda seed: create_train_state(mlp, "adam", x[:1], seed=seed, learning_rate=0.05)
    results = search(make_mlp, (x, y), {"dropout_rate": [0.0, 0.6]}, method="grid", population=2,
                     epochs=3, batch_size=16, verbose=0)  # fmt: skip
    for row in results:
        seed = row["seed"]
        state = set_model_hyperparam(make_mlp(seed), "dropout_rate", row["dropout_rate"])
        _, hist = fit(state, (x, y), epochs=3, batch_size=16, seed=seed, verbose=0)
        np.testing.assert_allclose(row["loss"], hist["loss"][-1], rtol=1e-5)
    assert {round(r["dropout_rate"], 3) for r in results} == {0.0, 0.6}


def test_patience_watches_the_metric_that_ranks_the_trials():
    # Separable data and a large rate: training accuracy reaches 1 within two epochs and
    # then cannot improve, while the loss keeps falling for all 6 epochs.
    x = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
    x[:, 0] += np.where(x[:, 0] > 0, 3.0, -3.0)
    y = (x[:, 0] > 0).astype(np.int32)
    space = {"learning_rate": [0.5]}
    kw = dict(epochs=6, batch_size=16, patience=1, verbose=0)
    by_accuracy = search(make, (x, y), space, method="grid", metric="accuracy", **kw)
    by_loss = search(make, (x, y), space, method="grid", **kw)
    assert by_accuracy.best["accuracy"] == 1.0 and by_accuracy.best["epochs"] < 6
    assert by_loss.best["epochs"] == 6


def regression():
    x = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
    return x, 3 * x[:, :1]


def test_errors_such_as_mse_rank_lowest_first():
    from jaxnets.training import evaluate

    data = regression()
    make_reg = lambda seed: create_train_state(nn.Dense(1), "adam", data[0][:1], seed=seed,
                                               loss="mse", metrics=["mse"])  # fmt: skip
    space = {"learning_rate": [1e-4, 1e-2, 1e-1]}
    for metric in ("mse", "val_mse"):
        results = search(make_reg, data, space, method="grid", population=2, epochs=3,
                         batch_size=16, validation_data=data, metric=metric, verbose=0)  # fmt: skip
        scores = [r[metric] for r in results]
        assert scores == sorted(scores) and len(set(scores)) == 3
        # The best state is the trial ranked first: evaluated, it gives that trial's score.
        got = evaluate(results.best_state, data, batch_size=16, verbose=0)["mse"]
        np.testing.assert_allclose(got, results.best["val_mse"], rtol=1e-5)


def test_search_over_a_scheduled_optimizer_trains_each_trial_with_its_peak():
    from jaxnets.training import fit

    x = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    make_sched = lambda seed, lr=1e-2: create_train_state(
        nn.Dense(2), "adam", x[:1], seed=seed, learning_rate=lr, schedule="warmup_cosine",
        total_steps=8,
    )  # fmt: skip
    results = search(make_sched, (x, y), {"learning_rate": [1e-4, 1e-1]}, method="grid",
                     population=2, epochs=2, batch_size=16, verbose=0)  # fmt: skip
    assert results[0]["loss"] != results[1]["loss"]
    for row in results:
        _, hist = fit(make_sched(row["seed"], row["learning_rate"]), (x, y), epochs=2,
                      batch_size=16, seed=row["seed"], verbose=0)  # fmt: skip
        np.testing.assert_allclose(row["loss"], hist["loss"][-1], rtol=1e-6)
    assert results.best["learning_rate"] == 1e-1
