"""Smoke tests of ``experiments/``: every study's ``--quick`` mode, and the quickstart notebook.

Each study runs in a subprocess (its own JAX, no fake devices) and writes into a
temporary ``--out`` folder, never over the committed results. A study whose dataset
is missing exits with ``common.SKIP_EXIT`` and its install hint; the test then skips
with that hint. UCR problems and the Austen corpus are found through ``JAXNETS_DATA``
(see ``shared/datasets.md``; ``.ci/run`` fetches them).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"
SKIP_EXIT = 77  # experiments/common.py

# study -> (extra arguments, files its quick run must write)
STUDIES = {
    "mnist1d": (["--recipes", "tuned"], ["curves.png", "confusion.png"]),
    "digits": ([], ["curves.png", "confusion_mlp.png", "confusion_cnn.png"]),
    "fashion_mnist": ([], ["curves.png", "confusion_mlp.png", "confusion_cnn.png"]),
    "sequences": (
        ["--problems", "japanese_vowels", "--models", "gru", "transformer"],
        ["curves_japanese_vowels.png", "confusion_japanese_vowels.png"],
    ),
    "charlm": ([], ["curves.png", "samples.txt"]),
    "gan": ([], ["samples.png", "samples_trained.png", "samples_untrained.png", "curves.png"]),
    "regularization": (
        ["--variants", "baseline", "early_stopping", "combined"],
        ["curves.png", "confusion.png"],
    ),
}


def run_study(study: str, extra: list[str], out: Path) -> dict:
    cmd = [sys.executable, str(EXPERIMENTS / study / "run.py"), "--quick", "--out", str(out)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [*cmd, *extra], capture_output=True, text=True, timeout=600, env=env, cwd=ROOT
    )
    if proc.returncode == SKIP_EXIT:
        pytest.skip(proc.stderr.strip().splitlines()[-1])
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    )
    return json.loads((out / "results.json").read_text())


def _check(study: str, results: dict):
    """A few study-specific sanity checks on the quick results."""
    if study == "mnist1d":
        acc = results["recipes"]["tuned"]["models"]["cnn"]["test_accuracy"]["mean"]
        assert 0.0 <= acc <= 1.0
    elif study == "digits":
        for r in results["models"].values():
            assert r["runs"][0]["max_gap_vs_sklearn"] < 1e-5  # checked in the script too
        assert results["baseline_logistic_regression"] > 0.9
    elif study == "fashion_mnist":
        assert set(results["models"]) == {"mlp", "cnn"}
    elif study == "sequences":
        assert "japanese_vowels" in results["problems"]
    elif study == "charlm":
        kn5 = results["baselines"]["kneser_ney_5gram"]["nats_per_char"]
        assert 0.5 < kn5 < results["baselines"]["unigram"]["nats_per_char"]
        assert results["models"]["gpt"]["sample"].startswith("It is a truth")
    elif study == "gan":
        assert results["untrained"]["frechet_distance"]["mean"] > 0
    elif study == "regularization":
        assert results["variants"]["early_stopping"]["runs"][0]["stopped_after"] <= 2


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.parametrize("study", sorted(STUDIES))
def test_quick_mode(study, tmp_path):
    extra, files = STUDIES[study]
    results = run_study(study, extra, tmp_path)
    assert "machine" in results and results["seconds"] >= 0
    for name in files:
        path = tmp_path / name
        assert path.exists() and path.stat().st_size > 0, f"{study} did not write {name}"
    _check(study, results)


def test_quick_mode_never_writes_the_study_folder(monkeypatch):
    monkeypatch.syspath_prepend(str(EXPERIMENTS))
    import common

    study_file = str(EXPERIMENTS / "digits" / "run.py")
    quick = common.parser("x").parse_args(["--quick"])
    assert common.out_dir(quick, study_file) != (EXPERIMENTS / "digits")
    full = common.parser("x").parse_args([])
    assert common.out_dir(full, study_file) == EXPERIMENTS / "digits"


@pytest.mark.slow
@pytest.mark.subprocess
def test_quickstart_notebook_runs(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(EXPERIMENTS / "quickstart.ipynb", as_version=4)
    # jupyter_client starts "python" as sys.executable: the kernel runs in this environment.
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    outputs = "".join(
        out.get("text", "") for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs
    )
    assert "test accuracy" in outputs


# --- experiments/charlm/ngram.py: the Kneser-Ney baseline of the char-LM study ---------


def _ngram_module(monkeypatch):
    monkeypatch.syspath_prepend(str(EXPERIMENTS / "charlm"))
    import ngram

    return ngram


def _kneser_ney_direct(tokens, order: int, vocab: int):
    """P(w | context) of interpolated Kneser-Ney written out with dicts: the oracle.

    The top order counts n-grams; lower orders count distinct left neighbours
    (continuation counts); each order discounts by ``n1 / (n1 + 2 n2)`` of its counts and
    an unseen context falls through to the order below; the uniform sits under order 1.
    """
    tokens = [int(t) for t in tokens]
    grams = {k: {} for k in range(1, order + 1)}
    for i in range(len(tokens) - order + 1):
        g = tuple(tokens[i : i + order])
        grams[order][g] = grams[order].get(g, 0) + 1
    for k in range(1, order):
        left = {tuple(tokens[i : i + k + 1]) for i in range(len(tokens) - k)}
        for g in left:
            grams[k][g[1:]] = grams[k].get(g[1:], 0) + 1
    discount = {}
    for k, counts in grams.items():
        n1 = sum(c == 1 for c in counts.values())
        n2 = sum(c == 2 for c in counts.values())
        discount[k] = n1 / (n1 + 2 * n2) if n1 + n2 else 0.5

    def prob(context: tuple, w: int, k: int) -> float:
        if k == 0:
            return 1.0 / vocab
        ctx = context[len(context) - (k - 1) :] if k > 1 else ()
        lower = prob(context, w, k - 1)
        same = [c for g, c in grams[k].items() if g[:-1] == ctx]
        if not same:
            return lower
        total, d = sum(same), discount[k]
        return max(grams[k].get((*ctx, w), 0) - d, 0) / total + d * len(same) / total * lower

    return lambda context, w: prob(tuple(context), w, order)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_kneser_ney_matches_direct_counts(monkeypatch, order):
    ngram = _ngram_module(monkeypatch)
    tokens = np.random.default_rng(order).integers(0, 4, 120)
    model = ngram.KneserNey(tokens, order=order, vocab_size=5)  # token 4 never occurs
    oracle = _kneser_ney_direct(tokens, order, 5)
    for position in (order - 1, 17, 63, 119):
        want = [oracle(tokens[position - order + 1 : position], w) for w in range(5)]
        np.testing.assert_allclose(model.probabilities(tokens, position), want, rtol=1e-12)
    # nll is the mean of -log P(token | context) over the scored positions, order 1 included
    # (whose empty history once made `nll` fail with "need at least one array to stack").
    start = max(order - 1, 0)
    want = -np.mean(
        [np.log(oracle(tokens[i - order + 1 : i], tokens[i])) for i in range(start, 120)]
    )
    assert model.nll(tokens, start, chunk=50) == pytest.approx(want, rel=1e-12)


def test_ngram_docstring_example(monkeypatch):
    """`experiments/` is outside the doctest paths, so its one doctest runs here."""
    import doctest

    failed, attempted = doctest.testmod(_ngram_module(monkeypatch))
    assert attempted > 0 and failed == 0


@pytest.mark.subprocess
def test_gpu_check_help_prints_usage_without_running():
    proc = subprocess.run(
        [sys.executable, str(EXPERIMENTS / "scaling" / "gpu_check.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: gpu_check.py") and "max |param" not in proc.stdout
