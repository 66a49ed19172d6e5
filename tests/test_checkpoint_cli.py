"""`jaxnets train --workdir` resumes; `jaxnets evaluate --workdir` restores the checkpoint."""

import json

import pytest

from jaxnets import models
from jaxnets.cli import main

MLP = next(name for name in models.names() if name.startswith("mlp"))


def train(workdir, *extra):
    args = ["train", "--model", MLP, "--batch-size", "128", "--workdir", str(workdir)]
    return main([*args, "--verbose", "2", *extra])


@pytest.mark.slow
def test_train_twice_resumes_and_evaluate_restores(tmp_path, capsys):
    assert train(tmp_path, "--epochs", "2", "--save-every", "5") == 0
    first = capsys.readouterr().out
    assert first.count("Epoch ") == 2
    steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir())
    assert steps[-1] == 2 * 12  # 1437 digits / 128 -> 12 steps per epoch

    assert train(tmp_path, "--epochs", "2", "--save-every", "5") == 0  # already complete
    second = capsys.readouterr().out
    assert "resuming from" in second and "(after epoch 2)" in second
    assert "Epoch " not in second
    assert second.splitlines()[-2] == first.splitlines()[-2]  # same final test accuracy

    assert train(tmp_path, "--epochs", "3") == 0  # more epochs continue the run
    third = capsys.readouterr().out
    assert third.count("Epoch ") == 1 and "Epoch 3/3" in third
    assert len(json.loads((tmp_path / "history.json").read_text())["loss"]) == 3

    assert main(["evaluate", "--workdir", str(tmp_path)]) == 0
    evaluated = capsys.readouterr().out
    saved = json.loads((tmp_path / "test_metrics.json").read_text())
    assert f"accuracy: {saved['accuracy']:.4f}" in evaluated


def test_resuming_with_another_configuration_is_refused(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"model": MLP, "lr": 0.5}))
    assert train(tmp_path, "--epochs", "1") == 2
    err = capsys.readouterr().err
    assert "another configuration" in err and "lr: 0.5 -> 0.001" in err


def test_save_every_must_be_epoch_or_positive(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--save-every", "0"])
    assert "expected 'epoch' or a positive integer" in capsys.readouterr().err
