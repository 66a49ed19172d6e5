"""export / load_exported: jax.export round trip with a symbolic batch, run without model code."""

import json
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import numpy as np
import pytest

from jaxnets import models
from jaxnets.checkpoint import export, load_exported
from jaxnets.errors import CheckpointError, ConfigError
from jaxnets.training import create_train_state, predict

RNG = np.random.default_rng(0)


@pytest.fixture(scope="module")
def cnn_export(tmp_path_factory):
    """The zoo CNN, shrunk, with non-trivial weights; exported once for the module."""
    model = models.get("cnn", filters=(4, 8), num_classes=3, input_shape=(12, 12, 1))
    x = RNG.normal(size=(1, 12, 12, 1)).astype(np.float32)
    state = create_train_state(model, "sgd", x, learning_rate=0.1, seed=2)
    path = export(state, tmp_path_factory.mktemp("cnn"), x)
    return state, path


@pytest.mark.parametrize("batch", [3, 7])
def test_reloaded_function_matches_the_model_on_any_batch_size(cnn_export, batch):
    state, path = cnn_export
    f = load_exported(path)
    x = RNG.normal(size=(batch, 12, 12, 1)).astype(np.float32)
    out = np.asarray(f(x))
    assert out.shape == (batch, 3)
    np.testing.assert_allclose(out, predict(state, x), rtol=1e-5, atol=1e-6)
    signature = json.loads((path / "signature.json").read_text())
    assert signature["input"] == {"shape": ["b", "12", "12", "1"], "dtype": "float32"}
    assert signature["outputs"] == [{"shape": ["b", "3"], "dtype": "float32"}]


def test_module_with_batch_stats_exports_in_inference_mode(tmp_path):
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = False):
            x = nn.BatchNorm(use_running_average=not train)(nn.Dense(4)(x))
            return nn.Dense(2)(nn.Dropout(0.5, deterministic=not train)(x))

    x = RNG.normal(size=(5, 3)).astype(np.float32)
    variables = Net().init(jax.random.key(0), x)
    variables = jax.tree.map(lambda v: v + 0.5, variables)  # non-trivial running statistics
    path = export(Net(), tmp_path, x, variables=variables)
    np.testing.assert_allclose(
        load_exported(path)(x), Net().apply(variables, x), rtol=1e-6, atol=1e-6
    )
    with pytest.raises(ConfigError, match="variables"):
        export(Net(), tmp_path, x)


def test_fixed_batch_export_and_errors(tmp_path):
    state = create_train_state(nn.Dense(2), "sgd", np.zeros((1, 3), np.float32), learning_rate=0.1)
    f = load_exported(
        export(state, tmp_path, np.zeros((4, 3), np.float32), batch_polymorphic=False)
    )
    assert f(np.ones((4, 3), np.float32)).shape == (4, 2)
    with pytest.raises(ValueError, match="shape"):
        f(np.ones((5, 3), np.float32))
    with pytest.raises(CheckpointError, match="not a readable jaxnets export"):
        load_exported(tmp_path / "missing")


@pytest.mark.slow
@pytest.mark.subprocess
def test_runs_in_a_process_without_flax_or_jaxnets(cnn_export):
    state, path = cnn_export
    x = RNG.normal(size=(2, 12, 12, 1)).astype(np.float32)
    np.save(path.parent / "x.npy", x)
    code = textwrap.dedent(
        f"""
        import sys
        import jax, numpy as np
        exp = jax.export.deserialize(bytearray(open({str(path / "function.stablehlo")!r}, "rb").read()))
        with np.load({str(path / "variables.npz")!r}, allow_pickle=False) as npz:
            variables = [npz[f"v{{i}}"] for i in range(len(npz.files))]
        out = exp.call(variables, np.load({str(path.parent / "x.npy")!r}))
        assert "flax" not in sys.modules and "jaxnets" not in sys.modules
        np.save({str(path.parent / "out.npy")!r}, np.asarray(out))
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    np.testing.assert_allclose(
        np.load(path.parent / "out.npy"), predict(state, x), rtol=1e-5, atol=1e-6
    )
