"""`fit_population`: each member equals training it alone; early stopping per member."""

import dataclasses

import jax
import numpy as np
import pytest

from jaxnets import models, optim
from jaxnets.errors import ConfigError
from jaxnets.population import Population, fit_population, stack_states
from jaxnets.training import TrainState, create_train_state, fit


def make_data(n=40, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5)).astype(np.float32)
    return x, (x[:, 0] - x[:, 1] > 0).astype(np.int32)


def make(seed):
    module = models.get("mlp_784_128_10", features=(8,), num_classes=2, dropout_rate=0.2,
                        input_shape=(5,))  # fmt: skip
    return create_train_state(module, "adam", np.zeros((1, 5), np.float32), seed=seed)


def test_each_member_equals_training_it_alone():
    data, seeds, lrs = make_data(), [3, 4], [1e-3, 5e-2]
    pop = fit_population(
        make, data, seeds=seeds, hparams={"learning_rate": lrs, "weight_decay": 1e-3},
        epochs=2, batch_size=16, validation_data=data, verbose=0,
    )  # fmt: skip
    for i, (seed, lr) in enumerate(zip(seeds, lrs, strict=True)):
        state = make(seed)
        opt = optim.set_hyperparam(state.opt_state, "learning_rate", lr)
        state = state.replace(opt_state=optim.set_hyperparam(opt, "weight_decay", 1e-3))
        solo, hist = fit(state, data, epochs=2, batch_size=16, seed=seed,
                         validation_data=data, verbose=0)  # fmt: skip
        member = pop.member(i)
        assert isinstance(member, TrainState) and int(member.step) == int(solo.step)
        for a, b in zip(jax.tree.leaves(solo.params), jax.tree.leaves(member.params), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6, rtol=0)
        np.testing.assert_allclose(hist["val_loss"], pop.histories[i]["val_loss"], rtol=1e-5)
    best = pop.best_index()
    assert pop.scores()[best] == min(pop.scores())
    assert pop.table()[best]["learning_rate"] == lrs[best]


def test_a_stopped_member_stops_changing_while_the_others_train():
    data = make_data()
    # At a learning rate of 1 the validation loss jumps back up at epoch 3; 0.01 improves steadily.
    pop = fit_population(
        make, data, seeds=[0, 1], hparams={"learning_rate": [1.0, 0.01]}, epochs=6,
        batch_size=16, validation_data=data, patience=1, verbose=0,
    )  # fmt: skip
    fast, slow = pop.stopped_epoch
    assert fast is not None and fast < 5 and slow is None
    assert len(pop.histories[0]["loss"]) == fast + 1
    steps = -(-40 // 16)
    assert int(pop.member(0).step) == (fast + 1) * steps
    assert int(pop.member(1).step) > int(pop.member(0).step)


def test_states_must_share_shapes():
    other = create_train_state(
        models.get("mlp_784_128_10", features=(4,), num_classes=2, input_shape=(5,)),
        "adam", np.zeros((1, 5), np.float32),
    )  # fmt: skip
    with pytest.raises(ConfigError, match="share the architecture"):
        stack_states([make(0), other])
    with pytest.raises(ConfigError, match="values for 2 members"):
        fit_population(make, make_data(), n=2, hparams={"learning_rate": [0.1]}, verbose=0)


def test_without_early_stopping_every_epoch_is_logged_in_order(capsys):
    # Without patience the next epoch is queued before the last one's metrics are read.
    pop = fit_population(make, make_data(), n=3, epochs=3, batch_size=16, verbose=1)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("Epoch")]
    assert [ln.split(" - ")[0] for ln in lines] == ["Epoch 1/3", "Epoch 2/3", "Epoch 3/3"]
    assert all(len(h["loss"]) == 3 for h in pop.histories)
    assert pop.stopped_epoch == [None, None, None]


def test_each_member_has_its_own_dropout_rate():
    # make() builds an MLP with a jaxnets Dropout (rate 0.2); members override it.
    from jaxnets.training.state import set_model_hyperparam

    data, rates = make_data(), [0.0, 0.5, 0.2]
    pop = fit_population(make, data, seeds=[7, 7, 7], hparams={"dropout_rate": rates},
                         epochs=2, batch_size=16, verbose=0)  # fmt: skip
    members = [pop.member(i) for i in range(3)]
    for member, rate in zip(members, rates, strict=True):
        solo, _ = fit(set_model_hyperparam(make(7), "dropout_rate", rate), data, epochs=2,
                      batch_size=16, seed=7, verbose=0)  # fmt: skip
        for a, b in zip(jax.tree.leaves(solo.params), jax.tree.leaves(member.params), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6, rtol=0)
        assert float(member.hparams["dropout_rate"]) == np.float32(rate)
    # Rate 0 is no dropout at all: the same training as a model without a Dropout layer.
    plain = create_train_state(
        models.get("mlp_784_128_10", features=(8,), num_classes=2, input_shape=(5,)),
        "adam", np.zeros((1, 5), np.float32), seed=7,
    )  # fmt: skip
    plain, _ = fit(plain, data, epochs=2, batch_size=16, seed=7, verbose=0)
    for a, b in zip(jax.tree.leaves(plain.params), jax.tree.leaves(members[0].params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6, rtol=0)
    # The stated rate (0.2) injected explicitly is the module's own training.
    own, _ = fit(make(7), data, epochs=2, batch_size=16, seed=7, verbose=0)
    for a, b in zip(jax.tree.leaves(own.params), jax.tree.leaves(members[2].params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6, rtol=0)
    first = lambda state: np.asarray(jax.tree.leaves(state.params)[0])
    assert not np.allclose(first(members[1]), first(members[0]))  # the rate made a difference


def test_a_dropout_rate_for_a_model_without_a_jaxnets_dropout_is_an_error():
    import flax.linen as nn

    make_plain = lambda seed: create_train_state(nn.Dense(2), "adam", np.zeros((1, 5), np.float32),
                                                 seed=seed)  # fmt: skip
    with pytest.raises(ConfigError, match="need a layer that reads them"):
        fit_population(
            make_plain, make_data(), n=2, hparams={"dropout_rate": [0.1, 0.2]}, verbose=0
        )
    with pytest.raises(ConfigError, match=r"dropout_rate must be in \[0, 1\)"):
        fit_population(make, make_data(), n=2, hparams={"dropout_rate": [0.1, 1.0]}, verbose=0)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU's choice of dot library")
def test_cpu_population_program_has_no_eigen_batched_weight_gradient():
    from jaxnets import compile as compile_lib
    from jaxnets.cpu_batched_dots import eigen_middle_contractions

    fit_population(make, make_data(), n=3, epochs=1, batch_size=16, verbose=0)
    programs = [
        c.as_text()
        for c, rep in compile_lib._EXECUTABLES.values()
        if rep.name == "population epoch (N=3)"
    ]
    # Rewritten (jaxnets.cpu_batched_dots), the members' weight gradients run in YNNPACK
    # fusions; plain vmap leaves them Eigen products contracting a middle axis.
    eigen = [line for text in programs for line in eigen_middle_contractions(text)]
    assert programs and eigen == []


@pytest.mark.parametrize(
    "name, kwargs, shape",
    [
        ("lstm", {"hidden_size": 8, "input_shape": (6, 4)}, (6, 4)),  # the fused LSTM's loops
        ("cnn", {"input_shape": (12, 12, 1)}, (12, 12, 1)),  # im2col products
        ("resnet_tiny", {"input_shape": (8, 8, 3)}, (8, 8, 3)),  # BatchNorm's mutable state
    ],
)
def test_zoo_families_in_a_population_equal_their_solo_fits(name, kwargs, shape):
    # On CPU the population program is rewritten (jaxnets.cpu_batched_dots) through
    # loop bodies, custom derivatives and branches; members must still equal solo fits.
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, *shape)).astype(np.float32), rng.integers(0, 3, 40).astype(np.int32)
    module = models.get(name, num_classes=3, **kwargs)
    make_one = lambda seed: create_train_state(module, "adam", x[:1], seed=seed)
    pop = fit_population(make_one, (x, y), seeds=[1, 2], epochs=2, batch_size=16, verbose=0)
    for i, seed in enumerate([1, 2]):
        solo, _ = fit(make_one(seed), (x, y), epochs=2, batch_size=16, seed=seed, verbose=0)
        for a, b in zip(
            jax.tree.leaves(pop.member(i).params), jax.tree.leaves(solo.params), strict=True
        ):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=0)


def test_scheduled_members_train_with_their_own_peak():
    # With a schedule, a member's learning rate is the schedule's peak (it used to be
    # recomputed from the shared schedule at every step, so both members trained alike).
    import flax.linen as nn

    x, y = make_data(n=64)
    state = lambda seed, lr: create_train_state(nn.Dense(2), "adam", x[:1], seed=seed,
                                                learning_rate=lr, schedule="cosine",
                                                total_steps=8)  # fmt: skip
    lrs = [1e-4, 1e-1]
    pop = fit_population(lambda seed: state(seed, 1e-2), (x, y), seeds=[0, 0],
                         hparams={"learning_rate": lrs}, epochs=2, batch_size=32, verbose=0)  # fmt: skip
    assert pop.histories[0]["loss"] != pop.histories[1]["loss"]
    for i, lr in enumerate(lrs):
        solo, hist = fit(state(0, lr), (x, y), epochs=2, batch_size=32, seed=0, verbose=0)
        member = pop.member(i)
        assert float(optim.get_hyperparam(member.opt_state)) == np.float32(lr)
        for a, b in zip(jax.tree.leaves(solo.params), jax.tree.leaves(member.params), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6, rtol=0)
        np.testing.assert_allclose(hist["loss"], pop.histories[i]["loss"], rtol=1e-6)


def regression(n=64):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    return x, 3 * x[:, :1]


def make_regressor(seed):
    import flax.linen as nn

    x, _ = regression()
    return create_train_state(nn.Dense(1), "adam", x[:1], seed=seed, loss="mse",
                              metrics=["mse", "mae"])  # fmt: skip


def test_errors_such_as_mse_and_mae_are_minimised():
    data = regression()
    pop = fit_population(make_regressor, data, n=3, hparams={"learning_rate": [1e-4, 1e-2, 1e-1]},
                         epochs=3, batch_size=16, validation_data=data, verbose=0)  # fmt: skip
    for metric in ("mse", "mae", "val_mse", "val_mae", "loss"):
        scores = pop.scores(metric)
        assert len(set(scores)) == 3  # a real choice
        assert pop.best_index(metric) == int(np.argmin(scores)), metric
    assert pop.best_index("mse", mode="max") == int(np.argmax(pop.scores("mse")))
    # A name of no known direction needs a mode, as in the callbacks.
    other = Population(None, [{"score": [1.0]}, {"score": [2.0]}], [0, 1], [{}, {}],
                       [None, None], "score")  # fmt: skip
    with pytest.raises(ConfigError, match="pass mode='max' or mode='min'"):
        other.best_index()
    assert other.best_index(mode="max") == 1
    assert dataclasses.replace(other, mode="min").best_index() == 0


def test_early_stopping_on_val_mse_waits_while_it_falls():
    data = regression()
    pop = fit_population(make_regressor, data, n=2, hparams={"learning_rate": 1e-2}, epochs=4,
                         batch_size=16, validation_data=data, patience=1, monitor="val_mse",
                         verbose=0)  # fmt: skip
    for h in pop.histories:  # val_mse falls every epoch: no member may stop
        assert np.all(np.diff(h["val_mse"]) < 0)
    assert pop.stopped_epoch == [None, None]
    assert pop.best().params["kernel"].shape == (4, 1)


def test_inputs_are_checked_as_fit_checks_them():
    from jaxnets.errors import DataError, ShapeError

    x, y = make_data()
    bad = [((x, y + 5), None, DataError), ((x[:, :3], y), None, ShapeError),
           ((x, y), (x, y + 5), DataError)]  # fmt: skip
    for data, val, error in bad:
        with pytest.raises(error) as from_fit:
            fit(make(0), data, validation_data=val, epochs=1, batch_size=16, verbose=0)
        with pytest.raises(error) as from_population:
            fit_population(make, data, n=2, validation_data=val, epochs=1, batch_size=16,
                           verbose=0)  # fmt: skip
        assert str(from_population.value) == str(from_fit.value)


# A model whose hyperparameter is a dropout rate (README "Design").
def _dropout_data():
    x = np.random.default_rng(0).normal(size=(40, 5)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int32)


def _make_dropout_mlp(seed):
    module = models.get("mlp", features=(8,), num_classes=2, dropout_rate=0.2, input_shape=(5,))
    return create_train_state(module, "adam", np.zeros((1, 5), np.float32), seed=seed)


def test_dropout_rates_in_a_second_population_of_the_process():
    # The check that a model reads `dropout_rate` traced the epoch with jax.eval_shape,
    # whose trace cache made the second same-shaped population raise "this model has none".
    for rates in ([0.1, 0.3], [0.2, 0.4]):
        pop = fit_population(_make_dropout_mlp, _dropout_data(), n=2, hparams={"dropout_rate": rates},
                             epochs=1, batch_size=16, verbose=0)  # fmt: skip
        assert [float(h) for h in pop.states.hparams["dropout_rate"]] == [
            float(np.float32(r)) for r in rates
        ]


def test_members_counted_from_hparams_lists():
    # README "Design": fit_population(make, data, hparams={"dropout_rate": [0.1, 0.3, 0.5]})
    pop = fit_population(_make_dropout_mlp, _dropout_data(), hparams={"dropout_rate": [0.1, 0.3, 0.5]},
                         epochs=1, batch_size=16, verbose=0)  # fmt: skip
    assert pop.seeds == [0, 1, 2] and [h["dropout_rate"] for h in pop.hparams] == [0.1, 0.3, 0.5]


def test_search_over_dropout_rates_in_several_generations():
    from jaxnets.tune import Uniform, search

    results = search(_make_dropout_mlp, _dropout_data(), {"dropout_rate": Uniform(0.0, 0.5)}, n_trials=4,
                     population=2, epochs=1, batch_size=16, verbose=0)  # fmt: skip
    assert sorted(r["trial"] for r in results) == [0, 1, 2, 3]
