"""Data-parallel engines give the numbers of one device (8 fake CPU devices, see conftest)."""

import contextlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

from jaxnets import parallel
from jaxnets.errors import ConfigError, UnknownNameError
from jaxnets.layers import BatchNormalization, replicas
from jaxnets.parallel import ShardedEngine, make_engine
from jaxnets.training import create_train_state, evaluate, fit, loop, predict

TOL = 1e-6

pytestmark = pytest.mark.eight_devices


class MLP(nn.Module):
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(nn.Dense(16)(x))
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(3)(x)


class CNN(nn.Module):
    """Conv-BatchNorm-ReLU, pooled, Dense: batch statistics must be global.

    The convolution has no bias: BatchNorm removes it, so its gradient would be
    rounding noise that Adam scales up to full-size steps.
    """

    axis_name: str | None = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(4, (3, 3), use_bias=False)(x)
        x = BatchNormalization(axis_name=self.axis_name)(x, train=train)
        return nn.Dense(3)(nn.relu(x).mean(axis=(1, 2)))


def models_mlp_with_dropout():
    """The MLP above with jaxnets' Dropout, which draws from the replicated stream under pmap."""
    from jaxnets import models

    return models.get("mlp", features=(16,), num_classes=3, dropout_rate=0.5)


def mlp_data(n=320, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    y = (np.argmax(x[:, :3], axis=1)).astype(np.int32)
    return x, y


def train(module, data, engine=None, *, optimizer="adam", lr=0.02, batch_size=16, epochs=1):
    x, y = data
    state = create_train_state(module, optimizer, x[:1], learning_rate=lr, seed=1)
    state, history = fit(
        state, (x, y), epochs=epochs, batch_size=batch_size, verbose=0, engine=engine, seed=3
    )
    return state, history


def max_diff(a, b) -> float:
    diffs = jax.tree.map(lambda u, v: float(np.max(np.abs(np.asarray(u) - np.asarray(v)))), a, b)
    return max(jax.tree.leaves(diffs), default=0.0)


@pytest.fixture(scope="module")
def mlp_reference():
    return train(MLP(), mlp_data())


def test_eight_fake_devices():
    assert jax.device_count() == 8


@pytest.mark.parametrize("kind", ["jit", "pmap"])
def test_mlp_matches_single_device_after_20_steps(kind, mlp_reference):
    ref, ref_history = mlp_reference
    state, history = train(MLP(), mlp_data(), make_engine(8, kind))
    assert int(state.step) == 20
    assert max_diff(state.params, ref.params) < TOL
    assert history["loss"][0] == pytest.approx(ref_history["loss"][0], abs=TOL)


def test_jit_engine_keeps_state_replicated_and_pmap_has_no_device_axis(mlp_reference):
    ref, _ = mlp_reference
    state, _ = train(MLP(), mlp_data(), make_engine(8))
    kernel = state.params["Dense_0"]["kernel"]
    assert kernel.sharding.is_fully_replicated and len(kernel.sharding.device_set) == 8
    state, _ = train(MLP(), mlp_data(), make_engine(8, "pmap"))
    assert state.params["Dense_0"]["kernel"].shape == ref.params["Dense_0"]["kernel"].shape


@pytest.mark.slow
@pytest.mark.parametrize("kind,axis_name", [("jit", None), ("pmap", None), ("pmap", "data")])
def test_cnn_with_batchnorm_matches_single_device(kind, axis_name):
    # Under pmap the engine syncs batch statistics itself; an explicit axis_name still works.
    rng = np.random.default_rng(0)
    data = (rng.normal(size=(320, 6, 6, 1)).astype(np.float32), rng.integers(0, 3, 320))
    ref, _ = train(CNN(), data)
    state, _ = train(CNN(axis_name=axis_name), data, make_engine(8, kind))
    assert max_diff(state.params, ref.params) < TOL
    assert max_diff(state.model_state, ref.model_state) < TOL


def test_pmap_batchnorm_without_sync_would_differ():
    # The control for the test above: per-device statistics give other numbers,
    # so that test would catch an engine that stopped syncing them.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 6, 6, 1)).astype(np.float32) * np.arange(1, 17)[:, None, None, None]
    module = CNN()
    variables = module.init(jax.random.key(0), x[:1])

    def stats(rows, sync):
        def per_device(rows):
            with contextlib.ExitStack() as stack:
                if sync:
                    stack.enter_context(replicas.split_over("data"))
                _, upd = module.apply(variables, rows, train=True, mutable=["batch_stats"])
            return upd["batch_stats"]["BatchNormalization_0"]["mean"]

        return jax.vmap(per_device, axis_name="data")(rows.reshape(8, 2, 6, 6, 1))

    _, whole = module.apply(variables, x, train=True, mutable=["batch_stats"])
    whole = whole["batch_stats"]["BatchNormalization_0"]["mean"]
    np.testing.assert_allclose(stats(x, True), np.broadcast_to(whole, (8, 4)), atol=1e-6)
    assert np.abs(stats(x, False) - whole).max() > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("accumulate", [1, 2])
def test_zoo_batchnorm_and_dropout_model_under_pmap_matches_jit(accumulate):
    # A zoo model (Conv-BatchNorm-ReLU blocks) with dropout added: pmap and jit
    # engines normalize over the whole batch and draw the same dropout masks.
    from jaxnets import models

    rng = np.random.default_rng(0)
    data = (rng.normal(size=(96, 8, 8, 1)).astype(np.float32), rng.integers(0, 3, 96))
    convnet = models.get("convnet_bn", filters=(4, 8), strides=(1, 2), num_classes=3)
    for m, d in ((convnet, data), (models_mlp_with_dropout(), mlp_data(96))):
        jit, _ = train(m, d, make_engine(8, "jit", accumulate=accumulate), epochs=2)
        pmap, _ = train(m, d, make_engine(8, "pmap", accumulate=accumulate), epochs=2)
        one, _ = train(m, d, epochs=2) if accumulate == 1 else (jit, None)
        assert max_diff(pmap.params, jit.params) < TOL
        assert max_diff(pmap.model_state, jit.model_state) < TOL
        assert max_diff(one.params, jit.params) < TOL


@pytest.mark.parametrize("kind", ["jit", "pmap"])
def test_plain_sgd_step_equals_closed_form_gradient(kind):
    # One SGD step of linear regression on 12 real rows, padded to 16 for 8 devices.
    # A gradient summed instead of averaged over devices would be 8x too large.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 3)).astype(np.float32)
    y = rng.normal(size=(12, 1)).astype(np.float32)
    state = create_train_state(
        nn.Dense(1), "sgd", x[:1], loss="mse", metrics=(), learning_rate=0.1, seed=0
    )
    w, b = np.asarray(state.params["kernel"]), np.asarray(state.params["bias"])
    residual = x @ w + b - y  # d/dw mean((xw + b - y)^2) = 2 x^T r / n
    expected_w = w - 0.1 * 2 * x.T @ residual / 12
    expected_b = b - 0.1 * 2 * residual.mean(axis=0)
    state, _ = fit(
        state, (x, y), batch_size=12, shuffle=False, verbose=0, engine=make_engine(8, kind)
    )
    np.testing.assert_allclose(state.params["kernel"], expected_w, atol=TOL)
    np.testing.assert_allclose(state.params["bias"], expected_b, atol=TOL)


@pytest.mark.parametrize("kind", ["jit", "pmap"])
def test_batch_not_divisible_by_device_count(kind):
    data = mlp_data(150)  # batches of 20 (padded to 24 for 8 devices), the last one 10 rows
    ref, ref_history = train(MLP(), data, batch_size=20, epochs=2)
    engine = make_engine(8, kind)
    state, history = train(MLP(), data, engine, batch_size=20, epochs=2)
    assert engine.batch_multiple == 8 and engine.padded_size(20) == 24
    assert max_diff(state.params, ref.params) < TOL
    np.testing.assert_allclose(history["loss"], ref_history["loss"], atol=TOL)
    x, y = data
    got, want = evaluate(state, data, batch_size=30, engine=engine), evaluate(ref, data)
    assert got["loss"] == pytest.approx(want["loss"], abs=TOL)
    assert got["accuracy"] == want["accuracy"]
    out = predict(state, x[:37], batch_size=30, engine=engine)
    assert out.shape == (37, 3)
    np.testing.assert_allclose(out, predict(ref, x[:37]), atol=1e-5)


@pytest.mark.parametrize(
    "kind,devices,accumulate", [("jit", 8, 4), ("pmap", 8, 2), ("local", 1, 4)]
)
def test_accumulation_matches_full_batch(kind, devices, accumulate, mlp_reference):
    ref, _ = mlp_reference
    engine = make_engine(devices, kind, accumulate=accumulate)
    assert engine.batch_multiple == (devices if kind != "local" else 1) * accumulate
    state, _ = train(MLP(), mlp_data(), engine)
    assert max_diff(state.params, ref.params) < TOL


def test_accumulation_matches_full_batch_with_plain_sgd():
    data = mlp_data(96)
    ref, _ = train(MLP(), data, optimizer="sgd", lr=0.5, batch_size=32)
    state, _ = train(
        MLP(), data, make_engine(8, accumulate=2), optimizer="sgd", lr=0.5, batch_size=32
    )
    assert max_diff(state.params, ref.params) < TOL


def test_dropout_masks_do_not_depend_on_device_count():
    assert jax.config.jax_threefry_partitionable
    data = mlp_data(160)
    one, _ = train(MLP(dropout=0.5), data, make_engine(1))
    eight, _ = train(MLP(dropout=0.5), data, make_engine(8))
    assert max_diff(one.params, eight.params) < TOL
    # The masks themselves, drawn inside a computation on a batch split 8 ways.
    layer = nn.Dropout(0.5, deterministic=False)
    key = jax.random.key(0)
    draw = jax.jit(lambda x: layer.apply({}, x, rngs={"dropout": key}))
    x = np.ones((16, 8), np.float32)
    engine = make_engine(8)
    split = engine.place_batch({"x": x})["x"]
    assert len(split.sharding.device_set) == 8
    np.testing.assert_array_equal(draw(jnp.asarray(x)), draw(split))


def test_pmap_dropout_masks_do_not_depend_on_device_count():
    data = mlp_data(160)
    module = models_mlp_with_dropout()
    one, _ = train(module, data)
    for devices in (2, 8):
        state, _ = train(module, data, make_engine(devices, "pmap"))
        assert max_diff(one.params, state.params) < TOL
    # A model whose dropout ignores the shared stream (Flax's own) still trains,
    # with each device drawing its own masks.
    state, history = train(MLP(dropout=0.5), data, make_engine(8, "pmap"))
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(state.params))
    assert np.isfinite(history["loss"][0])


def test_two_fits_reuse_the_engines_compiled_step():
    engine = ShardedEngine(devices=4)
    train(MLP(), mlp_data(64), engine)
    compiled = dict(engine._compiled)
    train(MLP(), mlp_data(64, seed=1), engine)
    assert engine._compiled == compiled  # nothing new was built
    step = engine.compile(loop.train_and_accumulate, donate_argnums=(0, 1))
    assert step is compiled[(loop.train_and_accumulate, (0, 1))]
    assert make_engine(4) is make_engine(4)  # the factory reuses engines, and their compiles


def test_custom_mesh_with_a_second_axis(mlp_reference):
    ref, _ = mlp_reference
    mesh = Mesh(np.array(jax.devices()).reshape(4, 2), ("data", "model"))
    engine = make_engine(mesh=mesh)
    assert engine.num_devices == 4 and engine.batch_multiple == 4
    state, _ = train(MLP(), mlp_data(), engine)
    assert max_diff(state.params, ref.params) < TOL


def test_make_engine_rejects_bad_options_clearly():
    with pytest.raises(UnknownNameError, match="did you mean 'pmap'"):
        make_engine(engine="pamp")
    with pytest.raises(ConfigError, match="devices=9 but 8"):
        make_engine(9)
    with pytest.raises(ConfigError, match="one device"):
        make_engine(8, "local")
    with pytest.raises(ConfigError, match="'data' axis"):
        make_engine(mesh=Mesh(np.array(jax.devices()), ("batch",)))
    with pytest.raises(ConfigError, match="only used by the jit engine"):
        make_engine(engine="pmap", mesh=parallel.make_mesh(2))
    with pytest.raises(ConfigError, match="accumulate"):
        make_engine(2, accumulate=0)
    with pytest.raises(ConfigError, match="twice"):
        make_engine([jax.devices()[0], jax.devices()[0]])
    assert type(make_engine(1, "pmap")).__name__ == "LocalEngine"


def test_pmap_engine_refuses_functions_it_has_no_per_device_version_of():
    with pytest.raises(ConfigError, match="engine='jit'"):
        make_engine(2, "pmap").compile(lambda s, b: s)


@pytest.mark.parametrize("kind,accumulate", [("jit", 2), ("pmap", 1)])
def test_float16_with_loss_scaling_matches_one_device(kind, accumulate):
    x, y = mlp_data(96)

    def run(engine):
        state = create_train_state(
            MLP(), "adam", x[:1], learning_rate=0.02, seed=1, precision="float16"
        )
        return fit(state, (x, y), batch_size=16, verbose=0, engine=engine, seed=3)[0]

    ref, got = run(None), run(make_engine(8, kind, accumulate=accumulate))
    assert max_diff(got.params, ref.params) < 1e-3  # half-precision sums in another order
    assert float(got.loss_scale.scale) == float(ref.loss_scale.scale)
    assert int(got.loss_scale.good_steps) == int(ref.loss_scale.good_steps) == 6


def test_fit_and_model_fit_take_devices_and_match_one_device():
    """`fit(devices=8)` and `Model.fit(devices=8)`: the sharded engine, the same numbers."""
    import flax.linen as nn

    import jaxnets
    from jaxnets.training import create_train_state, fit

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    runs = []
    for devices in (None, 8):
        state = create_train_state(nn.Dense(2), "sgd", x[:1], learning_rate=0.1)
        state, _ = fit(state, (x, y), epochs=2, batch_size=20, verbose=0, devices=devices)
        runs.append(np.asarray(state.params["kernel"]))
    np.testing.assert_allclose(runs[0], runs[1], atol=1e-6)

    models = []
    for devices in (None, 8):
        model = jaxnets.Model(nn.Dense(2))
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", learning_rate=0.1)
        kwargs = {} if devices is None else {"devices": devices}
        model.fit(x, y, epochs=2, batch_size=20, verbose=0, **kwargs)
        models.append(model)
    assert models[1]._keras.engine.batch_multiple == 8
    np.testing.assert_allclose(
        models[0].state.params["kernel"], models[1].state.params["kernel"], atol=1e-6
    )
    np.testing.assert_allclose(models[0].predict(x), models[1].predict(x), atol=1e-6)
