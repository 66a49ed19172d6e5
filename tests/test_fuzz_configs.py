"""Fuzzing the JSON a run reads back: saved-model configs and checkpoint metadata.

Any bytes, and any JSON value put anywhere in a valid file, must give a result or a
`JaxnetsError`: never another exception, a hang or an allocation the file asked for.
"""

import json
import os

import jax.numpy as jnp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxnets import layers
from jaxnets.checkpoint import CheckpointManager
from jaxnets.errors import JaxnetsError
from jaxnets.keras import Sequential, load_model, saving, serialization
from jaxnets.training import create_train_state

FUZZ = settings(
    max_examples=120,
    deadline=20_000,  # generous (a shared CPU); a hang still fails
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
pytestmark = pytest.mark.timeout(300)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.sampled_from([0, 1, -1, 3, 2**31, 10**12])
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(["Dense", "Sequential", "sgd", "mse", "float32", "relu", "nan", "inf"]),
    lambda kids: (
        st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids, max_size=3)
    ),
    max_leaves=6,
)


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, (*prefix, i))


def _mutate(obj, data):
    """``obj`` with one value replaced by a random JSON value, or one entry deleted."""
    obj = json.loads(json.dumps(obj))
    path = data.draw(st.sampled_from(list(_paths(obj))))
    if not path:
        return data.draw(json_values)
    parent = obj
    for key in path[:-1]:
        parent = parent[key]
    if data.draw(st.integers(0, 4)) == 0:
        del parent[path[-1]]
    else:
        parent[path[-1]] = data.draw(json_values)
    return obj


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("model") / "model")
    model = Sequential([layers.Dense(2, input_shape=(3,), activation="relu")])
    model.compile(optimizer="sgd", loss="mse")
    model.save(path)
    with open(os.path.join(path, "model.json")) as f:
        return path, json.load(f)


def _load(path):
    try:
        return load_model(path)
    except JaxnetsError:
        return None


@FUZZ
@given(blob=st.binary(max_size=200))
def test_model_json_any_bytes(saved_model, tmp_path_factory, blob):
    path = str(tmp_path_factory.mktemp("bytes"))
    with open(os.path.join(path, "model.json"), "wb") as f:
        f.write(blob)
    _load(path)


@FUZZ
@given(data=st.data())
def test_model_json_any_value_anywhere(saved_model, tmp_path_factory, monkeypatch, data):
    path, meta = saved_model
    # The arrays are the checkpoint fuzzer's business; here they are the target itself.
    monkeypatch.setattr(saving, "_read_tree", lambda where, target: target)
    out = str(tmp_path_factory.mktemp("json"))
    with open(os.path.join(out, "model.json"), "w") as f:
        json.dump(_mutate(meta, data), f)
    _load(out)


@settings(FUZZ, max_examples=300)
@given(config=json_values | st.fixed_dictionaries({"__module__": json_values, "config": json_values}))  # fmt: skip
def test_architecture_from_any_json(config):
    try:
        serialization.from_config(config)
    except JaxnetsError:
        pass


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt")
    state = create_train_state(layers.Dense(2), "sgd", jnp.zeros((1, 3)), learning_rate=0.1)
    with CheckpointManager(path) as mngr:
        mngr.save(state, epoch=1, history={"loss": [0.5]})
    meta_file = path / "0" / "meta" / "metadata"
    return path, state, meta_file, json.loads(meta_file.read_text())


def _restore(path, state):
    try:
        with CheckpointManager(path, read_only=True, monitor=None) as mngr:
            return mngr.restore(state, step=0)
    except JaxnetsError:
        return None


@settings(FUZZ, max_examples=100)
@given(data=st.data())
def test_checkpoint_metadata_any_value_anywhere(checkpoint, data):
    path, state, meta_file, meta = checkpoint
    try:
        blob = data.draw(st.binary(max_size=100) | st.just(None))
        if blob is None:
            meta_file.write_text(json.dumps(_mutate(meta, data)))
        else:
            meta_file.write_bytes(blob)
        _restore(path, state)
    finally:
        meta_file.write_text(json.dumps(meta))


def _set(*path, value=None, delete=False):
    def edit(meta):
        for key in path[:-1]:
            meta = meta[key]
        if delete:
            del meta[path[-1]]
        else:
            meta[path[-1]] = value

    return edit


@pytest.mark.parametrize(
    "edit",
    [  # found by the fuzzers above: each raised a KeyError, TypeError or ValueError
        _set("compile", "loss", value={}),
        _set("compile", "metrics", delete=True),
        _set("seed", value="abc"),
        _set("input", "dtype", value="object"),
        # and what a file must not be able to ask for: tens of gigabytes
        _set("module", "config", "layers", 0, "config", "units", value=10**12),
        _set("input", "shape", value=[2**31]),
    ],
)
def test_model_json_regressions(saved_model, tmp_path, edit):
    meta = json.loads(json.dumps(saved_model[1]))
    edit(meta)
    (tmp_path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(JaxnetsError):
        load_model(str(tmp_path))


@pytest.mark.parametrize("key", ["epoch", "stopped", "callbacks", "checksums"])
def test_checkpoint_meta_regressions(checkpoint, key):
    path, state, meta_file, meta = checkpoint
    try:
        meta_file.write_text(json.dumps({k: v for k, v in meta.items() if k != key}))
        with pytest.raises(JaxnetsError, match=f"damaged meta file: entry {key!r}"):
            with CheckpointManager(path, read_only=True, monitor=None) as mngr:
                mngr.restore(state, step=0)
    finally:
        meta_file.write_text(json.dumps(meta))
