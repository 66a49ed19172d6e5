"""CSVLogger and ProgBar inside Model.fit."""

import csv
import io

import flax.linen as nn
import numpy as np
import pytest

from jaxnets.callbacks import CSVLogger, ProgBar
from jaxnets.keras import Model


@pytest.fixture
def model_and_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    model = Model(nn.Dense(2))
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model, x, y


def test_csv_logger_matches_history(tmp_path, model_and_data):
    model, x, y = model_and_data
    path = tmp_path / "log.csv"
    history = model.fit(
        x, y, epochs=3, validation_data=(x, y), callbacks=[CSVLogger(path)], verbose=0
    )
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert set(rows[0]) == {"epoch", *history.history}
    for name, values in history.history.items():
        np.testing.assert_allclose([float(r[name]) for r in rows], values, rtol=1e-6)
    # append=True continues the file without a second header
    model.fit(x, y, epochs=1, validation_data=(x, y), callbacks=[CSVLogger(path, append=True)],
              verbose=0)  # fmt: skip
    with open(path, newline="") as f:
        lines = f.read().strip().splitlines()
    assert len(lines) == 5 and lines[0].startswith("epoch")


def test_csv_logger_separator(tmp_path, model_and_data):
    model, x, y = model_and_data
    path = tmp_path / "log.tsv"
    model.fit(x, y, epochs=1, callbacks=[CSVLogger(path, separator="\t")], verbose=0)
    header = path.read_text().splitlines()[0]
    assert header.split("\t")[0] == "epoch" and "loss" in header.split("\t")


def test_progbar_lines_and_bar(model_and_data):
    model, x, y = model_and_data
    out = io.StringIO()
    model.fit(x, y, epochs=2, batch_size=8, callbacks=[ProgBar(verbose=2, file=out)], verbose=0)
    lines = out.getvalue().strip().splitlines()
    assert [ln.split(" - ")[0] for ln in lines] == ["Epoch 1/2", "Epoch 2/2"]
    assert "loss:" in lines[-1]
    out = io.StringIO()
    model.fit(x, y, epochs=1, batch_size=8, log_every=2, callbacks=[ProgBar(1, out)], verbose=0)
    assert "5/5" in out.getvalue()


def test_fit_verbose_draws_progress(model_and_data, capsys):
    model, x, y = model_and_data
    model.fit(x, y, epochs=2, verbose=2)
    assert "Epoch 2/2" in capsys.readouterr().out
