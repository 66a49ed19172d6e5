"""`benchmarks.lstm_onednn_ffi`: oneDNN's LSTM through ``jax.ffi`` computes jaxnets' LSTM.

The values test needs a C++ compiler and oneDNN (``pip install -e '.[bench]'``);
without them it skips, saying which is missing.
"""

import jax
import numpy as np
import pytest

from benchmarks import lstm_onednn_ffi as ffi_lstm
from jaxnets.layers.lstm_fused import lstm_sequence


@pytest.fixture(scope="module")
def built():
    try:
        ffi_lstm.load()
    except RuntimeError as e:
        pytest.skip(str(e))


@pytest.mark.parametrize("shape", [(5, 3, 4, 8), (1, 2, 3, 16)])
def test_values_and_gradients_match_the_layer(built, shape):
    x = ffi_lstm.inputs(*shape, seed=sum(shape))
    (va, ga), (vb, gb) = (
        ffi_lstm.loss_and_grads(f)(*x) for f in (lstm_sequence, ffi_lstm.lstm_onednn)
    )
    np.testing.assert_allclose(float(vb), float(va), rtol=1e-5)
    for a, b in zip(ga, gb, strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-5)
    hs, c = jax.jit(ffi_lstm.lstm_onednn)(*x)
    want_hs, want_c = lstm_sequence(*x)
    np.testing.assert_allclose(np.asarray(hs), np.asarray(want_hs), atol=1e-6)
    np.testing.assert_allclose(np.asarray(c), np.asarray(want_c), atol=1e-6)


def test_missing_onednn_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("ONEDNN_ROOT", str(tmp_path))
    monkeypatch.setenv("CXX", "true")  # any compiler: the headers are checked first
    with pytest.raises(RuntimeError, match=f"no oneDNN headers under {tmp_path}"):
        ffi_lstm.build(tmp_path)
