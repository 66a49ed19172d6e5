"""`jaxnets train --model NAME` for the GAN pairs, the tagger and the siamese models."""

import json
import struct
import zlib

import numpy as np
import pytest

from jaxnets import data, gan_runner, recipes
from jaxnets.checkpoint import CheckpointManager
from jaxnets.cli import main
from jaxnets.data import austen, pairs


def _austen_dir():
    try:
        return austen.find_austen_dir()
    except Exception:
        return None


needs_austen = pytest.mark.skipif(
    _austen_dir() is None,
    reason="janeaustenr not found: apt-get download r-cran-janeaustenr && dpkg-deb -x "
    "r-cran-janeaustenr_*.deb DIR and set JAXNETS_DATA=DIR",
)


def _number_after(text: str, label: str) -> float:
    return float(text.split(label)[1].split()[0].rstrip(",;"))


def _png_size(path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk, after checking signature and CRC."""
    raw = path.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    length, tag = struct.unpack(">I4s", raw[8:16])
    assert tag == b"IHDR" and length == 13
    crc = struct.unpack(">I", raw[16 + length : 20 + length])[0]
    assert crc == zlib.crc32(raw[12 : 16 + length])
    return struct.unpack(">II", raw[16:24])


def _train(*args):
    return main(["train", "--verbose", "2", *args])


# -- GAN pairs ---------------------------------------------------------------------------


def test_gan_mlp_trains_the_pair_and_writes_samples_history_and_metrics(tmp_path, capsys):
    args = ["--model", "gan_mlp_discriminator", "--epochs", "2", "--batch-size", "64"]
    assert _train(*args, "--workdir", str(tmp_path)) == 0
    out = capsys.readouterr().out
    assert "MLPGenerator" in out and "MLPDiscriminator" in out and "digits (8, 8, 1)" in out
    assert out.count("Epoch ") == 2 and "d_loss:" in out and "g_loss:" in out
    history = json.loads((tmp_path / "history.json").read_text())
    assert set(history) == {"d_loss", "g_loss", "d_real", "d_fake"}
    assert all(len(v) == 2 and np.all(np.isfinite(v)) for v in history.values())
    metrics = json.loads((tmp_path / "test_metrics.json").read_text())
    accuracy = _number_after(out, "real-vs-fake accuracy of the discriminator:")
    assert accuracy == pytest.approx(metrics["real_vs_fake_accuracy"], abs=1e-4)
    assert 0.0 <= metrics["real_accuracy"] <= 1.0 and 0.0 <= metrics["fake_accuracy"] <= 1.0
    assert metrics["final_g_loss"] == pytest.approx(history["g_loss"][-1])
    # The generator learned: its average sample is much nearer the average test digit
    # than the untrained generator's (0.58 -> 0.32 on this seed).
    config = json.loads((tmp_path / "config.json").read_text())
    _, x_test, _ = gan_runner.load_images(config)
    untrained = gan_runner.make_gan_state(config, x_test.shape[1:], total_steps=1)
    before = gan_runner.gan_quality(untrained, x_test, seed=0)["mean_image_gap"]
    assert metrics["mean_image_gap"] < 0.75 * before
    assert _number_after(out, "mean image gap:") == pytest.approx(
        metrics["mean_image_gap"], abs=1e-4
    )
    # 64 samples of 8x8 in an 8x8 grid with 1-pixel gaps: 8 * 9 + 1 = 73 pixels a side.
    assert _png_size(tmp_path / "samples.png") == (73, 73)
    assert json.loads((tmp_path / "config.json").read_text())["model"] == "gan_mlp_generator"


def test_gan_resumed_run_equals_an_uninterrupted_one_bitwise(tmp_path, capsys):
    whole, split = tmp_path / "whole", tmp_path / "split"
    args = ["--model", "gan_mlp_generator", "--batch-size", "64", "--seed", "3"]
    assert _train(*args, "--epochs", "2", "--workdir", str(whole)) == 0
    assert _train(*args, "--epochs", "1", "--workdir", str(split)) == 0
    capsys.readouterr()
    # The discriminator's name trains (and resumes) the same pair.
    resume = ["--model", "gan_mlp_discriminator", *args[2:], "--epochs", "2"]
    assert _train(*resume, "--workdir", str(split)) == 0
    out = capsys.readouterr().out
    steps = -(-1437 // 64)  # 23 batches per epoch, the last one padded and masked
    assert f"step {steps} (after epoch 1)" in out and "resuming from" in out
    assert "Epoch 1/2" not in out and "Epoch 2/2" in out

    def last_checkpoint(workdir):
        with CheckpointManager(workdir / "checkpoints", read_only=True, monitor=None) as mngr:
            assert mngr.latest_step() == 2 * steps
            return mngr.read(2 * steps)

    (a, meta_a), (b, meta_b) = last_checkpoint(whole), last_checkpoint(split)
    assert sorted(a) == sorted(b) and any("generator" in p for p in a)
    for path in a:
        np.testing.assert_array_equal(a[path], b[path], err_msg=path)
    assert meta_a["history"] == meta_b["history"]
    metrics = json.loads((whole / "test_metrics.json").read_text())
    assert json.loads((split / "test_metrics.json").read_text()) == metrics

    assert main(["evaluate", "--workdir", str(split)]) == 0
    evaluated = capsys.readouterr().out
    assert (
        f"real-vs-fake accuracy of the discriminator: {metrics['real_vs_fake_accuracy']:.4f}"
        in (evaluated)
    )


@pytest.mark.slow
def test_dcgan_trains_on_digit_images(tmp_path, capsys):
    args = ["--model", "dcgan_generator", "--epochs", "1", "--batch-size", "128"]
    assert _train(*args, "--workdir", str(tmp_path)) == 0
    out = capsys.readouterr().out
    assert "DCGANGenerator" in out and "digits (8, 8, 1)" in out and "Epoch 1/1" in out
    assert 0.0 <= _number_after(out, "real-vs-fake accuracy of the discriminator:") <= 1.0
    assert np.isfinite(json.loads((tmp_path / "history.json").read_text())["g_loss"][0])
    assert _png_size(tmp_path / "samples.png") == (73, 73)


def test_dcgan_on_vectors_is_refused_before_tracing(capsys):
    assert _train("--model", "dcgan_generator", "--dataset", "iris") == 2
    err = capsys.readouterr().err
    assert "multiples of 4" in err and "iris has examples of shape (4,)" in err


def test_gan_options_it_does_not_implement_are_refused(capsys):
    assert _train("--model", "dcgan_discriminator", "--fuse", "epoch", "--devices", "2") == 2
    err = capsys.readouterr().err
    assert "drop --devices, --fuse" in err


# -- gru_tagger on Austen word segmentation ---------------------------------------------


def test_segmentation_labels_mark_word_starts(monkeypatch):
    text = "It is a truth\nuniversally acknowledged,  that"
    novels = {name: text for name in austen.NOVELS}
    monkeypatch.setattr(austen, "load_austen_texts", lambda data_dir=None: novels)
    ds = data.load("austen_segmentation", seq_len=8, novels=("emma",), test_fraction=0.25)
    chars = "Itisatruthuniversallyacknowledged,that"  # 38 characters, 28 + 10 split
    vocab = sorted(set(chars))
    assert ds.task == "tagging" and ds.num_classes == 2 and ds.vocab_size == len(vocab)
    assert ds.x_train.shape == ds.y_train.shape == (3, 8) and ds.x_test.shape == (1, 8)
    decoded = "".join(vocab[t] for t in ds.x_train.ravel())
    assert decoded == chars[:24]
    starts = [i for i, label in enumerate(ds.y_train.ravel()) if label]
    assert starts == [0, 2, 4, 5, 10, 21]  # It, is, a, truth, universally, acknowledged


@needs_austen
@pytest.mark.slow
def test_gru_tagger_beats_the_majority_baseline(monkeypatch, capsys):
    # One novel keeps the run short; the default is all six.
    options = recipes.dataset_options
    monkeypatch.setattr(
        recipes, "dataset_options", lambda m, d: {**options(m, d), "novels": ("persuasion",)}
    )
    args = ["--model", "gru_tagger", "--epochs", "2", "--batch-size", "64", "--lr", "3e-3"]
    assert _train(*args) == 0
    out = capsys.readouterr().out
    assert "dataset=austen_segmentation" in out
    ds = data.load("austen_segmentation", novels=("persuasion",))
    share = float(ds.y_test.mean())  # characters that begin a word
    baseline = max(share, 1 - share)
    accuracy = _number_after(out, "final test accuracy:")
    assert accuracy > baseline + 0.05, (accuracy, baseline)
    assert _number_after(out.split("test:")[-1], "f1_binary:") > 0.5  # the majority scores 0


# -- siamese models on pairs ------------------------------------------------------------


def test_pairs_are_balanced_deterministic_and_stay_in_their_split(digits):
    ds = pairs.pair_dataset(digits)
    again = pairs.pair_dataset(digits)
    np.testing.assert_array_equal(ds.x_test, again.x_test)
    assert ds.x_train.shape == (len(digits.x_train), 2, 64) and ds.num_classes == 2
    for split, x, y in (("train", digits.x_train, digits.y_train), ("test", digits.x_test, None)):
        px, same = getattr(ds, f"x_{split}"), getattr(ds, f"y_{split}")
        assert abs(float(same.mean()) - 0.5) < 0.01
        rows = {row.tobytes(): i for i, row in enumerate(x)}
        assert all(m.tobytes() in rows for m in px.reshape(-1, 64))  # members of this split only
        if y is not None:
            a = np.array([rows[m.tobytes()] for m in px[:, 0]])
            b = np.array([rows[m.tobytes()] for m in px[:, 1]])
            np.testing.assert_array_equal(y[a] == y[b], same == 1)
            assert not np.any(a == b)


def test_siamese_mlp_verifies_digit_pairs_better_than_chance(capsys):
    assert _train("--model", "siamese_mlp", "--epochs", "3", "--batch-size", "64") == 0
    out = capsys.readouterr().out
    assert "dataset=digits" in out and "Epoch 3/3" in out
    assert _number_after(out, "final test accuracy:") > 0.7  # chance: 0.5 (balanced pairs)


@pytest.mark.slow
def test_siamese_cnn_verifies_fashion_pairs(monkeypatch, capsys):
    try:
        data.load("fashion_mnist", limit=1)
    except Exception as e:
        pytest.skip(f"Fashion-MNIST not installed: {e}")
    options = recipes.dataset_options
    monkeypatch.setattr(recipes, "dataset_options", lambda m, d: {**options(m, d), "limit": 3000})
    assert _train("--model", "siamese_cnn", "--epochs", "2", "--batch-size", "64") == 0
    out = capsys.readouterr().out
    assert "dataset=fashion_mnist" in out
    assert _number_after(out, "final test accuracy:") > 0.65
