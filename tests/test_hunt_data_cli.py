"""Bug hunt: datasets, preprocessing and the ``jaxnets`` command line against oracles.

Each test pins a defect found by comparing jaxnets with an independent reader or
with the documented behaviour (README, docstrings, ``--help``).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxnets import data, recipes, runner
from jaxnets.cli import build_parser, main
from jaxnets.data import Dataset, augment, austen, datasets, mnist1d_source
from jaxnets.errors import ConfigError, DataError, DatasetNotFoundError
from jaxnets.training import evaluate, fit

REPO = Path(__file__).resolve().parents[1]


# -- mnist1d cache ------------------------------------------------------------------------


@pytest.fixture
def fake_mnist1d(tmp_path, monkeypatch):
    """The mnist1d loader with a private cache and a counting stand-in generator."""
    monkeypatch.setenv("JAXNETS_CACHE", str(tmp_path))
    monkeypatch.setattr(mnist1d_source, "_cache_key", lambda n, s: "test")
    monkeypatch.setattr(mnist1d_source, "_args", lambda n, s: {})
    rng = np.random.default_rng(0)
    arrays = {
        "x": rng.normal(size=(12, 40)),
        "y": np.arange(12) % 10,
        "x_test": rng.normal(size=(5, 40)),
        "y_test": np.arange(5),
        "t": np.linspace(0, 1, 40),
    }
    calls = []

    def generate(args):
        calls.append(args)
        return {k: v.copy() for k, v in arrays.items()}

    monkeypatch.setattr(mnist1d_source, "_generate", generate)
    return tmp_path / "mnist1d_test.npz", arrays, calls


def _damage_half(path):
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])  # a write cut short


def _damage_bytes(path):
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2 : len(blob) // 2 + 32] = b"\x00" * 32  # bad CRC in the zip
    path.write_bytes(bytes(blob))


def _damage_shapes(path):
    np.savez(path, x=np.zeros((3, 40)), y=np.zeros(12), x_test=np.zeros((5, 40)),
             y_test=np.zeros(5), t=np.zeros(40))  # fmt: skip


@pytest.mark.parametrize("damage", [_damage_half, _damage_bytes, _damage_shapes])
def test_mnist1d_damaged_cache_is_regenerated_not_used(fake_mnist1d, damage):
    # Before: a half-written or corrupted cache raised zipfile.BadZipFile (a traceback
    # from `jaxnets train --model lstm`), and misaligned arrays a DataError, forever.
    path, arrays, calls = fake_mnist1d
    first = data.load("mnist1d")
    assert len(calls) == 1 and path.is_file()
    again = data.load("mnist1d")
    assert len(calls) == 1 and np.array_equal(again.x_train, first.x_train)  # from the cache
    damage(path)
    rebuilt = data.load("mnist1d")
    assert len(calls) == 2  # the damaged file was detected and regenerated
    assert np.array_equal(rebuilt.x_train, arrays["x"].astype(np.float32))
    assert np.array_equal(rebuilt.y_test, arrays["y_test"])
    assert len(calls) == 2 and np.array_equal(data.load("mnist1d").x_test, rebuilt.x_test)


# -- augmentation -------------------------------------------------------------------------


def test_random_flip_takes_int_probabilities_and_refuses_out_of_range():
    # Before: prob=1 or prob=0 (ints) raised JAX's "bernoulli probability `p` must have a
    # floating dtype"; prob=1.5 was silently taken as "always".
    images = np.arange(2 * 1 * 3 * 1, dtype=np.float32).reshape(2, 1, 3, 1)
    key = jax.random.key(0)
    flipped = np.asarray(augment.random_flip(key, images, prob=1))
    assert np.array_equal(flipped, images[:, :, ::-1])  # numpy's mirror
    assert np.array_equal(np.asarray(augment.random_flip(key, images, prob=0)), images)
    for bad in (1.5, -0.1, "0.5", True):
        with pytest.raises(ConfigError, match=r"prob must be a number in \[0, 1\]"):
            augment.random_flip(key, images, prob=bad)


def test_random_crop_takes_numpy_int_padding():
    # Before: padding=np.int64(1) raised "TypeError: 'numpy.int64' object is not iterable".
    images = np.arange(2 * 3 * 3 * 1, dtype=np.float32).reshape(2, 3, 3, 1)
    key = jax.random.key(0)
    expected = np.asarray(augment.random_crop(key, images, 1))
    assert np.array_equal(np.asarray(augment.random_crop(key, images, np.int64(1))), expected)
    with pytest.raises(ConfigError, match="padding must be an int >= 0"):
        augment.random_crop(key, images, True)


# -- registering datasets -----------------------------------------------------------------


@pytest.fixture
def registry(monkeypatch):
    """The dataset registry, restored after the test."""
    monkeypatch.setattr(datasets, "_REGISTRY", dict(datasets._REGISTRY))
    return datasets._REGISTRY


def _ramp(n: int = 4, **options):
    x = np.arange(n, dtype=np.float32)[:, None]
    return Dataset(x, x[:, 0], x, x[:, 0], None, (1,), "regression", "ramp")


def test_register_refuses_bad_registrations(registry):
    before = dict(registry)
    with pytest.raises(ConfigError, match=r'write @register\("name"\) above def _ramp'):
        data.register(_ramp)  # @register without parentheses
    with pytest.raises(ConfigError, match="at least one name"):
        data.register()(_ramp)
    with pytest.raises(ConfigError, match="non-empty strings, got ''"):
        data.register("")(_ramp)
    with pytest.raises(ConfigError, match="loader function that returns a Dataset, got int 42"):
        data.register("answer")(42)
    # Before: each of these was accepted silently, and this one replaced the built-in digits.
    with pytest.raises(ConfigError, match="'digits' is already registered to .*sources_sklearn"):
        data.register("Digits")(_ramp)
    assert registry == before
    data.register("ramp")(_ramp)
    data.register("ramp")(_ramp)  # the same definition again (a re-run cell) is fine


def test_load_passes_any_option_to_a_kwargs_loader(registry):
    # Before: "dataset 'ramp' has no option 'extra'. Its options: n, options".
    data.register("ramp")(_ramp)
    assert len(data.load("ramp", n=6, extra=1).x_train) == 6


def test_load_refuses_a_loader_that_returns_no_dataset(registry):
    # Before: load returned the tuple, or failed with AttributeError 'with_validation'.
    data.register("pair")(lambda: (np.zeros(3), np.zeros(3)))
    for kwargs in ({}, {"val_fraction": 0.1}):
        with pytest.raises(DataError, match="returned tuple; a loader must return"):
            data.load("pair", **kwargs)


def test_canonical_name_resolves_case_and_aliases():
    assert data.canonical_name("DIGITS") == "digits"
    assert data.canonical_name("jane_austen") == "austen"
    assert data.canonical_name("fashion-mnist") == "fashion_mnist"


# -- Austen -------------------------------------------------------------------------------


@pytest.fixture
def tiny_novels(monkeypatch):
    """Six short 'novels' in place of janeaustenr's files."""
    texts = {name: f"{name} text, {i} words." for i, name in enumerate(austen.NOVELS)}
    monkeypatch.setattr(austen, "load_austen_texts", lambda data_dir=None: texts)
    return texts


def test_austen_refuses_a_repeated_novel(tiny_novels):
    # Before: novels=("emma", "emma") tested on the text it trained on (the second copy).
    for name in ("austen", "austen_segmentation"):
        with pytest.raises(ConfigError, match="emma more than once"):
            data.load(name, novels=("emma", "emma"))


def test_austen_takes_novels_in_publication_order(tiny_novels):
    # The docstring promises publication order; before, the order given was used.
    given = data.load("austen", novels=("persuasion", "emma"), seq_len=None)
    ordered = data.load("austen", novels=("emma", "persuasion"), seq_len=None)
    assert np.array_equal(given.x_train, ordered.x_train)
    text = tiny_novels["emma"] + "\n\n" + tiny_novels["persuasion"]
    vocab = given.class_names
    cut = int(len(text) * 0.9)  # the last 10% of the characters is the test split
    assert "".join(vocab[t] for t in given.x_train) + vocab[given.y_train[-1]] == text[:cut]
    one = data.load("austen", novels="emma", seq_len=None)  # one name as a plain string
    assert len(one.x_train) + len(one.x_test) + 2 == len(tiny_novels["emma"])


# -- recipes: validation splits and dataset names -----------------------------------------


def test_adapt_keeps_the_validation_split_of_an_autoencoder():
    # Before: reconstruct models dropped x_val, so --val-fraction threw those rows away
    # and reported no validation metrics.
    ds = recipes.adapt("autoencoder_dense", data.load("digits", val_fraction=0.2))
    assert len(ds.x_train) == 1149 and len(ds.x_val) == 288
    assert ds.y_val is ds.x_val and ds.y_train is ds.x_train


def test_adapt_keeps_the_validation_split_of_a_text_classifier():
    x = np.arange(40, dtype=np.int32).reshape(10, 4) % 7
    lm = Dataset(x[:6], x[:6] + 1, x[8:], x[8:] + 1, 8, (4,), "language_modeling", "toy",
                 x_val=x[6:8], y_val=x[6:8] + 1, vocab_size=8)  # fmt: skip
    ds = recipes.adapt("lstm_text", lm)
    assert np.array_equal(ds.y_val, x[6:8, -1] + 1) and np.array_equal(ds.x_val, x[6:8])
    assert np.array_equal(ds.y_train, x[:6, -1] + 1)


def test_dataset_options_ignore_case_and_aliases():
    # Before: --dataset Digits gave a CNN (64,) vectors ("ConvNetBN expects NHWC images"),
    # and --dataset jane_austen gave gpt_tiny windows of 128 > its block_size of 32.
    assert recipes.dataset_options("convnet_bn", "Digits") == {"image": True}
    assert recipes.dataset_options("gpt_tiny", "jane_austen") == recipes.dataset_options(
        "gpt_tiny", "austen"
    )
    args = build_parser().parse_args(["train", "--dataset", "DIGITS"])
    assert runner.run_config(args)["dataset"] == "digits"


def test_train_dataset_name_in_any_case(capsys):
    assert main(["train", "--model", "convnet_bn", "--dataset", "Digits", "--epochs", "1",
                 "--batch-size", "256", "--verbose", "0"]) == 0  # fmt: skip
    assert "final test accuracy" in capsys.readouterr().out


def test_train_keeps_the_step_masks_of_variable_length_data():
    # Before: `jaxnets train` fed (x, y) only, so an LSTM read the zero padding of
    # variable-length sequences as real steps. Oracle: the functional API with x_mask.
    args = build_parser().parse_args(
        [
            "train",
            "--model",
            "rnn",
            "--dataset",
            "synthetic_sequence",
            "--epochs",
            "1",
            "--batch-size",
            "64",
            "--verbose",
            "0",
        ]  # fmt: skip
    )
    got = runner.train(args)
    config = runner.run_config(args)
    ds = runner.load_dataset(config)
    assert ds.x_mask_train is not None and not ds.x_mask_train.all()
    steps = -(-len(ds.x_train) // 64)
    state = runner.make_state(config, ds, steps)
    state, _ = fit(state, ds.arrays("train"), epochs=1, batch_size=64, seed=0, verbose=0)
    want = evaluate(state, ds.arrays("test"), batch_size=256)
    assert got["loss"] == want["loss"] and got["accuracy"] == want["accuracy"]


# -- the command line ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--accumulate", "0", "argument --accumulate: expected a positive integer, got '0'"),
        ("--accumulate", "-2", "argument --accumulate: expected a positive integer"),
        ("--verbose", "3", "argument --verbose: invalid choice: 3"),
        ("--val-fraction", "1", r"argument --val-fraction: expected a number in \[0, 1\)"),
        ("--val-fraction", "nan", r"argument --val-fraction: expected a number in \[0, 1\)"),
    ],
)
def test_bad_option_values_exit_2_with_argparse_message(flag, value, message, capsys):
    # Before: --accumulate 0 (or -2) ran without accumulation, --verbose 3 ran silently.
    with pytest.raises(SystemExit) as exit_info:
        main(["train", flag, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert __import__("re").search(message, err)


def test_fuse_run_with_workdir_is_refused_before_anything_is_written(tmp_path, capsys):
    # Before: config.json was written, the data loaded and the model built, and then
    # fit said "fuse='run' cannot checkpoint or resume mid-epoch" (with --save-every epoch).
    workdir = tmp_path / "run"
    assert main(["train", "--fuse", "run", "--workdir", str(workdir), "--epochs", "1"]) == 2
    assert "--fuse run compiles the whole run" in capsys.readouterr().err
    assert not workdir.exists()


def _env():
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    env.pop("JAXNETS_CPU_DOTS", None)
    return env


def test_python_dash_m_jaxnets_runs_the_command():
    # Before: "No module named jaxnets.__main__".
    done = subprocess.run(
        [sys.executable, "-m", "jaxnets", "train", "--accumulate", "0"],
        capture_output=True, text=True, env=_env(), cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 2 and "expected a positive integer" in done.stderr
    assert "usage: jaxnets train" in done.stderr


def test_closed_stdout_pipe_ends_quietly():
    # `jaxnets datasets | head -1`: before, a BrokenPipeError traceback.
    child = subprocess.Popen(
        [sys.executable, "-m", "jaxnets.cli", "datasets"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**_env(), "PYTHONUNBUFFERED": "1"}, cwd=REPO,
    )  # fmt: skip
    child.stdout.close()  # the reader is gone before the first line is written
    with child.stderr:
        err = child.stderr.read().decode()
    assert child.wait() == 1
    assert "Traceback" not in err and "BrokenPipeError" not in err


def test_autoencoder_val_fraction_reports_validation_metrics(tmp_path):
    workdir = tmp_path / "ae"
    argv = ["train", "--model", "autoencoder_dense", "--epochs", "1", "--val-fraction", "0.2",
            "--batch-size", "128", "--verbose", "0", "--workdir", str(workdir)]  # fmt: skip
    assert main(argv) == 0
    history = json.loads((workdir / "history.json").read_text())
    assert set(history) == {"loss", "mae", "val_loss", "val_mae"}


# -- workdirs that a run left behind -------------------------------------------------------


def _config(**changes):
    args = build_parser().parse_args(["train", "--epochs", "1"])
    return {**runner.run_config(args), **changes}


def test_evaluate_a_workdir_without_checkpoint_says_so(tmp_path, capsys):
    # A run killed before its first save: before, Orbax's FileNotFoundError traceback
    # ("Checkpoint at .../weights not found").
    (tmp_path / "config.json").write_text(json.dumps(_config()))
    assert main(["evaluate", "--workdir", str(tmp_path)]) == 2
    assert "holds no checkpoint yet" in capsys.readouterr().err


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"model": "mlp", "data', "config.json is not valid JSON"),  # a write cut short
        ("[1, 2]", "config.json is not a jaxnets run configuration (a JSON object)"),
    ],
)
def test_damaged_config_json_is_a_clear_error(tmp_path, capsys, text, message):
    # Before: json.JSONDecodeError or TypeError tracebacks.
    (tmp_path / "config.json").write_text(text)
    assert main(["evaluate", "--workdir", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert main(["train", "--epochs", "1", "--workdir", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def test_evaluate_a_config_json_missing_keys_is_a_clear_error(tmp_path, capsys):
    # Before: a KeyError 'optimizer' traceback.
    (tmp_path / "config.json").write_text('{"model": "mlp"}')
    assert main(["evaluate", "--workdir", str(tmp_path)]) == 2
    assert "it lacks dataset, optimizer, lr, seed" in capsys.readouterr().err


def test_config_json_is_written_whole(tmp_path):
    runner.write_config(tmp_path, _config())
    assert runner.read_config(tmp_path) == _config()
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]  # no temporary left


def test_resuming_with_more_epochs_notes_a_stretched_schedule(tmp_path, capsys):
    # Oracle: a fresh 2-epoch cosine run; the continued 1-epoch run cannot match it (its
    # first epoch decayed to 0), which was silent before. A constant rate matches exactly.
    base = ["train", "--batch-size", "256", "--verbose", "0", "--workdir"]
    for schedule, noted in (("cosine", True), ("constant", False)):
        workdir = str(tmp_path / schedule)
        assert main([*base, workdir, "--epochs", "1", "--schedule", schedule]) == 0
        capsys.readouterr()
        assert main([*base, workdir, "--epochs", "2", "--schedule", schedule]) == 0
        out = capsys.readouterr().out
        assert ("note: --schedule cosine now spans 2 epochs" in out) == noted
        assert main([*base, workdir, "--epochs", "2", "--schedule", schedule]) == 0
        assert "note:" not in capsys.readouterr().out  # same length: nothing to say


@pytest.mark.parametrize("model", ["mlp", "gan_mlp_generator"])
def test_workdir_that_is_a_file_is_a_clear_error(tmp_path, capsys, model):
    # Before: a FileExistsError traceback from mkdir.
    target = tmp_path / "taken"
    target.write_text("not a folder")
    argv = ["train", "--model", model, "--epochs", "1", "--verbose", "0"]
    assert main([*argv, "--workdir", str(target)]) == 2
    assert f"--workdir {target} is a file, not a folder" in capsys.readouterr().err


# -- MNIST and Fashion-MNIST files share their names --------------------------------------


def _idx_folder(folder, first_labels):
    from jaxnets.data.idx import write_idx

    folder.mkdir(parents=True)
    labels = np.array(first_labels + (1, 2), np.uint8)
    for split in ("train", "t10k"):
        write_idx(np.zeros((len(labels), 28, 28), np.uint8), folder / f"{split}-images-idx3-ubyte")
        write_idx(labels, folder / f"{split}-labels-idx1-ubyte")
    return folder


def test_mnist_and_fashion_mnist_are_not_taken_for_each_other(tmp_path, monkeypatch):
    # Both loaders search $JAXNETS_DATA itself, where the files have the same names:
    # before, load("mnist") returned Fashion-MNIST's clothes as digits (and the other way).
    from jaxnets.data.sources_idx import FIRST_TRAIN_LABELS

    root = _idx_folder(tmp_path / "data", FIRST_TRAIN_LABELS["fashion_mnist"])
    monkeypatch.setenv("JAXNETS_DATA", str(root))
    fashion = data.load("fashion_mnist")
    assert fashion.y_train[:16].tolist() == list(FIRST_TRAIN_LABELS["fashion_mnist"])
    with pytest.raises(DatasetNotFoundError, match="a folder holding the other set's files"):
        data.load("mnist")
    _idx_folder(root / "mnist", FIRST_TRAIN_LABELS["mnist"])
    assert data.load("mnist").y_train[:16].tolist() == list(FIRST_TRAIN_LABELS["mnist"])
    clothes = _idx_folder(tmp_path / "clothes", FIRST_TRAIN_LABELS["fashion_mnist"])
    with pytest.raises(DatasetNotFoundError):
        data.load("mnist", data_dir=clothes)  # an explicit folder of the wrong set too
