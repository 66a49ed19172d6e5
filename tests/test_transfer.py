"""Transfer learning: load by path with renaming and skipping, freezing (bitwise, no optimizer
memory), per-group learning rates, gradual unfreezing (one recompile, resumable)."""

import json
import subprocess
import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxnets.callbacks import Callback
from jaxnets.checkpoint import (
    CheckpointManager,
    GradualUnfreezing,
    freeze_params,
    load_pretrained,
    masked_optimizer,
)
from jaxnets.checkpoint.structure import flatten
from jaxnets.compile import RetraceWarning
from jaxnets.errors import CheckpointError, ConfigError
from jaxnets.training import create_train_state, fit, train_step
from jaxnets.training.step import loss_and_updates

RNG = np.random.default_rng(0)
X = RNG.normal(size=(48, 5)).astype(np.float32)
Y = (X[:, 0] > 0).astype(np.int32) + (X[:, 1] > 0).astype(np.int32)


class Encoder(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Dense(8, name="dense")(x)
        return nn.relu(nn.BatchNorm(use_running_average=not train, name="bn")(x))


class Net(nn.Module):
    classes: int = 3
    encoder_name: str = "encoder"
    extra: bool = False

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = Encoder(name=self.encoder_name)(x, train=train)
        if self.extra:
            x = nn.Dense(8, name="adapter")(x)
        return nn.Dense(self.classes, name="head")(x)


def make(model=Net(), optimizer="adam", seed=0):
    return create_train_state(model, optimizer, X[:1], learning_rate=1e-2, seed=seed)


def bitwise_equal(a, b):
    return all(
        np.array_equal(np.asarray(x), np.asarray(y))
        and np.asarray(x).dtype == np.asarray(y).dtype
        and np.array_equal(np.signbit(x), np.signbit(y))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def test_load_pretrained_renames_and_skips_mismatched_heads(tmp_path):
    source = make(Net(classes=5))
    source = source.replace(model_state=jax.tree.map(lambda v: v + 1.0, source.model_state))
    with CheckpointManager(tmp_path) as mngr:
        mngr.save(source)
    target = make(Net(classes=3, encoder_name="backbone", extra=True), seed=1)

    with pytest.raises(CheckpointError) as info:  # same path, other shape: one error for all
        load_pretrained(target, tmp_path, rename={"encoder": "backbone"})
    assert "params/head/kernel: saved (8, 5) float32, expected (8, 3) float32" in str(info.value)
    assert "params/head/bias: saved (5,) float32, expected (3,) float32" in str(info.value)

    state, report = load_pretrained(
        target, tmp_path, rename={"encoder": "backbone"}, skip_mismatch=True
    )
    assert report.loaded == [
        "batch_stats/backbone/bn/mean",
        "batch_stats/backbone/bn/var",
        "params/backbone/bn/bias",
        "params/backbone/bn/scale",
        "params/backbone/dense/bias",
        "params/backbone/dense/kernel",
    ]
    assert [s.split(":")[0] for s in report.skipped] == ["params/head/bias", "params/head/kernel"]
    assert report.missing == ["params/adapter/bias", "params/adapter/kernel"]
    assert report.unused == []
    assert bitwise_equal(state.params["backbone"], source.params["encoder"])
    assert bitwise_equal(
        state.model_state["batch_stats"]["backbone"], source.model_state["batch_stats"]["encoder"]
    )
    assert bitwise_equal(state.params["head"], target.params["head"])  # kept at init
    assert bitwise_equal(state.params["adapter"], target.params["adapter"])
    assert bitwise_equal(state.opt_state, state.tx.init(state.params))  # a fresh optimizer state


def test_rename_rules_use_whole_components_groups_and_drop():
    pretrained = make(Net(classes=3)).params
    source = {
        "model": {
            "layer_1": pretrained["encoder"],
            "layer_10": {"w": np.zeros(4, np.float32)},  # must not match 'layer_(\\d)'
            "head": pretrained["head"],
        }
    }
    target = make(Net(encoder_name="enc_1"), seed=1)
    with pytest.raises(CheckpointError, match="no pretrained path matches"):
        load_pretrained(target, source)
    rules = [(r"model/layer_(\d)", r"enc_\1"), ("model/layer_10", None), ("model", "")]
    state, report = load_pretrained(target, source, rename=rules)
    assert len(report.loaded) == 6 and report.skipped == []
    assert report.unused == ["params/model/layer_10/w"]
    assert report.missing == ["batch_stats/enc_1/bn/mean", "batch_stats/enc_1/bn/var"]
    assert bitwise_equal(state.params["enc_1"], pretrained["encoder"])
    assert bitwise_equal(state.params["head"], pretrained["head"])
    assert bitwise_equal(state.model_state, target.model_state)


def nbytes(tree):
    return sum(np.asarray(x).nbytes for x in jax.tree.leaves(tree))


def test_freeze_keeps_leaves_bitwise_and_costs_no_optimizer_memory():
    state = make()
    params = jax.tree.map(lambda x: x, state.params)
    kernel = params["encoder"]["dense"]["kernel"]
    params["encoder"]["dense"]["kernel"] = kernel.at[0, 0].set(-0.0)  # the sign must survive
    frozen = freeze_params(state.replace(params=params), ["encoder/.*"], learning_rate=1e-2)

    head = nbytes(params["head"])
    scalars = nbytes(make().opt_state) - 2 * nbytes(params)  # counts, lr, weight decay
    assert nbytes(frozen.opt_state) == 2 * head + scalars  # Adam moments for the head only
    moment_shapes = {x.shape for x in jax.tree.leaves(frozen.opt_state) if x.ndim}
    assert moment_shapes == {x.shape for x in jax.tree.leaves(params["head"])}

    before = jax.tree.map(np.array, frozen.params)  # fit donates the state's buffers
    trained, _ = fit(frozen, (X, Y), epochs=3, batch_size=16, verbose=0)
    assert bitwise_equal(trained.params["encoder"], before["encoder"])
    assert np.signbit(trained.params["encoder"]["dense"]["kernel"][0, 0])
    assert not np.array_equal(trained.params["head"]["kernel"], before["head"]["kernel"])
    # optax.set_to_zero would have turned that -0.0 into +0.0:
    zero, _ = optax.set_to_zero().update(jnp.array([-0.0]), optax.EmptyState())
    assert not np.signbit(optax.apply_updates(jnp.array([-0.0]), zero))[0]


def test_per_group_learning_rates_scale_each_group():
    state = make(Net(), "sgd")
    lrs = {"encoder/.*": 1e-3, ".*": 1e-1}
    state = freeze_params(state, optimizer="sgd", learning_rate=lrs)
    batch = {"x": X, "y": Y, "mask": np.ones(len(X), np.float32)}
    new, _ = jax.jit(train_step)(state, batch)
    (_, _), grads = jax.value_and_grad(loss_and_updates, has_aux=True)(
        state.params, state, batch, state.step_key()
    )
    for path, g in flatten(grads).items():
        lr = 1e-3 if path.startswith("encoder/") else 1e-1
        delta = flatten(new.params)[path] - flatten(state.params)[path]
        np.testing.assert_allclose(delta, -lr * g, rtol=1e-4, atol=1e-7)
    with pytest.raises(ConfigError, match="matches no learning-rate pattern"):
        masked_optimizer("sgd", learning_rate={"encoder/.*": 1e-3}).init(state.params)


class Snapshots(Callback):
    def __init__(self):
        super().__init__()
        self.encoder = []

    def on_epoch_end(self, epoch, logs=None):
        self.encoder.append(jax.tree.map(np.array, self.model.state.params["encoder"]))


def _unfreezer():
    return GradualUnfreezing({1: ["encoder/.*"]}, freeze=["encoder/.*"], learning_rate=1e-2)


class Lowerings(Callback):
    """Counts programs lowered for compilation (cached or not) during each epoch."""

    def __init__(self):
        super().__init__()
        self.per_epoch, self.count = [], 0

    def _listen(self, event, duration, **kwargs):
        if event == "/jax/core/compile/jaxpr_to_mlir_module_duration":
            self.count += 1

    def on_train_begin(self, logs=None):
        jax.monitoring.register_event_duration_secs_listener(self._listen)

    def on_epoch_begin(self, epoch, logs=None):
        self.count = 0

    def on_epoch_end(self, epoch, logs=None):
        self.per_epoch.append(self.count)

    def on_train_end(self, logs=None):
        jax.monitoring.unregister_event_duration_listener(self._listen)


def test_gradual_unfreezing_recompiles_once():
    unfreeze, snaps, lowerings = _unfreezer(), Snapshots(), Lowerings()
    state = unfreeze.prepare(make())
    start = jax.tree.map(np.array, state.params["encoder"])
    callbacks = [unfreeze, snaps, lowerings]
    with pytest.warns(RetraceWarning, match="opt_state") as warned:  # fit names the recompile
        trained, _ = fit(state, (X, Y), epochs=4, batch_size=16, verbose=0, callbacks=callbacks)
    assert len(warned) == 1
    assert lowerings.per_epoch[1] >= 1 and lowerings.per_epoch[2:] == [0, 0]
    assert bitwise_equal(snaps.encoder[0], start)  # frozen during epoch 0
    assert not bitwise_equal(snaps.encoder[1], start)  # training from epoch 1 on
    inner = trained.opt_state.inner_states
    assert int(inner["group0"].inner_state.count) == 12  # the head's Adam kept its state
    assert int(inner["group0@1"].inner_state.count) == 9  # the encoder's started fresh


@pytest.mark.filterwarnings("ignore::jaxnets.compile.RetraceWarning")
def test_gradual_unfreezing_resumes_exactly(tmp_path):
    def run(epochs, workdir=None):
        unfreeze = _unfreezer()
        state = unfreeze.prepare(make())
        kw = {"workdir": workdir} if workdir else {}
        return fit(
            state, (X, Y), epochs=epochs, batch_size=16, verbose=0, callbacks=[unfreeze], **kw
        )

    reference, _ = run(3)
    run(2, tmp_path)  # saved after the unfreezing: a different optimizer structure
    resumed, _ = run(3, tmp_path)
    assert bitwise_equal(resumed.params, reference.params)
    assert bitwise_equal(resumed.opt_state, reference.opt_state)


@pytest.mark.slow
@pytest.mark.subprocess
def test_transfer_experiment_quick_mode(tmp_path):
    script = Path(__file__).parents[1] / "experiments" / "transfer" / "run.py"
    args = ["--quick", "--out", tmp_path / "out", "--workdir", tmp_path / "runs"]
    done = subprocess.run(
        [sys.executable, str(script), *map(str, args)], capture_output=True, text=True, timeout=300
    )
    if done.returncode == 77:  # experiments/common.py SKIP_EXIT: Fashion-MNIST is not installed
        pytest.skip(done.stderr.strip().splitlines()[-1])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "test accuracy on classes 5-9" in done.stdout
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(results["accuracy"]) == {"frozen backbone", "gradual unfreezing", "from scratch"}
    assert (tmp_path / "runs" / "pretrain" / "checkpoints").is_dir()
