"""`jaxnets train --devices/--engine/--accumulate` and `jaxnets launch -- jaxnets train`."""

import io
import json
import sys

import pytest

from jaxnets import cli, runner
from jaxnets.parallel.launch import launch

MODEL = ["--model", "mlp_784_64_64_10", "--dataset", "digits", "--verbose", "0"]


def train(*options):
    args = cli.build_parser().parse_args(["train", *MODEL, "--epochs", "1", *options])
    return runner.train(args)


@pytest.mark.eight_devices
@pytest.mark.slow
def test_devices_engines_and_accumulation_give_the_one_device_metrics(capsys):
    # Batches of 60 rows: padded to 64 on 8 devices, split in 2 microbatches of 32.
    one = train("--batch-size", "60")
    assert "on cpu\n" in capsys.readouterr().out
    for options in (
        ["--devices", "8"],
        ["--devices", "4", "--engine", "pmap", "--accumulate", "2"],
    ):
        got = train("--batch-size", "60", *options)
        assert got["loss"] == pytest.approx(one["loss"], abs=1e-5)
        assert got["accuracy"] == pytest.approx(one["accuracy"], abs=1e-6)
    out = capsys.readouterr().out
    assert "on cpu, jit engine on 8 device(s)" in out
    assert "pmap engine on 4 device(s), 2 microbatches per step" in out


@pytest.mark.eight_devices
def test_bad_device_options_are_rejected(capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["train", "--devices", "0"])
    assert "expected 'all' or a positive integer" in capsys.readouterr().err
    assert cli.main(["train", *MODEL, "--devices", "9"]) == 2
    assert "devices=9 but 8 device(s) are visible" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.timeout(150)
def test_two_process_cli_run_prints_and_writes_from_process_zero(tmp_path):
    out, err = io.StringIO(), io.StringIO()
    workdir = tmp_path / "run"
    command = [sys.executable, "-m", "jaxnets.cli", "train", *MODEL, "--epochs", "1"]
    command += ["--batch-size", "64", "--workdir", str(workdir), "--verbose", "2"]
    rc = launch(command, 2, cpu_devices=1, timeout=140, stdout=out, stderr=err)
    text = out.getvalue() + err.getvalue()
    assert rc == 0, text
    assert "[0] jaxnets train: model=mlp_784_64_64_10" in text
    assert "jit engine on 2 device(s) in 2 processes" in text
    assert "[1] jaxnets train" not in text and "[1] Epoch" not in text
    assert "[0] final test accuracy" in text
    history = json.loads((workdir / "history.json").read_text())
    assert len(history["loss"]) == 1
    assert json.loads((workdir / "config.json").read_text())["batch_size"] == 64
