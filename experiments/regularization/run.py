"""Regularization and learning-rate schedules, compared on one MLP on MNIST-1D.

The model is the MNIST-1D paper's MLP (40 -> 100 -> 100 -> 10, ReLU), which
overfits its 4000 training signals. 10% of the training set (stratified, seed 0)
is held out as a validation split; every variant trains on the other 3600 for 100
epochs with batch 100 and Adam at 1e-2, and is scored on the 1000 test signals:

* ``baseline``: nothing else;
* ``dropout``: dropout 0.2 after each hidden layer (`jaxnets.models.MLP.dropout_rate`);
* ``weight_decay``: decoupled weight decay 0.1 (``adamw``);
* ``early_stopping``: stop when the validation loss has not improved for 10 epochs
  and restore the best weights (a small `jaxnets.callbacks.Callback`);
* ``step`` / ``cosine`` / ``one_cycle``: the `jaxnets.optim` schedules of those names
  (step: x0.1 at 50% and 75% of training; cosine decay to 0; one-cycle);
* ``combined``: dropout 0.2, weight decay 0.1 and the cosine schedule together.

Usage:
  python experiments/regularization/run.py [--quick] [--seeds 0 1 2] [--epochs 100]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import common  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from jaxnets import models  # noqa: E402
from jaxnets.callbacks import Callback  # noqa: E402
from jaxnets.training import create_train_state, evaluate, fit  # noqa: E402

VARIANTS = {
    "baseline": {},
    "dropout": {"dropout": 0.2},
    "weight_decay": {"optimizer": "adamw", "weight_decay": 0.1},
    "early_stopping": {"patience": 10},
    "step": {"schedule": "step"},
    "cosine": {"schedule": "cosine"},
    "one_cycle": {"schedule": "one_cycle"},
    "combined": {"dropout": 0.2, "optimizer": "adamw", "weight_decay": 0.1, "schedule": "cosine"},
}


class BestWeights(Callback):
    """Early stopping on ``val_loss`` with Keras's ``restore_best_weights=True`` behaviour."""

    def __init__(self, patience: int):
        super().__init__()
        self.patience, self.best, self.wait, self.best_epoch, self.params_ = (
            patience,
            None,
            0,
            0,
            None,
        )

    def on_epoch_end(self, epoch, logs=None):
        loss = logs["val_loss"]
        if self.best is None or loss < self.best:
            # fit donates the state's buffers to the next step: keep a host copy.
            self.best, self.wait, self.best_epoch = loss, 0, epoch
            self.params_ = jax.device_get(self.model.state.params)
        else:
            self.wait += 1
            if self.wait >= self.patience:
                self.model.stop_training = True

    def on_train_end(self, logs=None):
        params = jax.tree.map(jnp.asarray, self.params_)
        self.model.state = self.model.state.replace(params=params)


def run_variant(cfg: dict, ds, seed: int, epochs: int):
    module = models.MLP(features=(100, 100), input_shape=(40,), dropout_rate=cfg.get("dropout", 0))
    steps = epochs * -(-len(ds.x_train) // 100)
    state = create_train_state(
        module, cfg.get("optimizer", "adam"), ds.x_train[:1], learning_rate=1e-2,
        schedule=cfg.get("schedule"), total_steps=steps,
        weight_decay=cfg.get("weight_decay", 0.0), seed=seed,
        metrics=["accuracy", "confusion_matrix"],
    )  # fmt: skip
    callbacks = [BestWeights(cfg["patience"])] if "patience" in cfg else []
    state, hist = fit(
        state, (ds.x_train, ds.y_train), epochs=epochs, batch_size=100, seed=seed,
        validation_data=(ds.x_val, ds.y_val), callbacks=callbacks, verbose=0, fuse="epoch",
    )  # fmt: skip
    test = evaluate(state, (ds.x_test, ds.y_test))
    extra = (
        {"stopped_after": len(hist["loss"]), "best_epoch": callbacks[0].best_epoch + 1}
        if callbacks
        else {}
    )
    hist = {k: v for k, v in hist.items() if "confusion" not in k}
    return test, hist, extra


def main():
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = p.parse_args()
    if args.quick:
        args.epochs, args.seeds = 2, args.seeds[:1]
    out = common.out_dir(args, __file__)
    total = common.Timer()
    ds = common.load("mnist1d", val_fraction=0.1)
    results = {"machine": common.machine(), "epochs": args.epochs, "variants": {}}
    curves, confusion = {}, {}
    for name in args.variants:
        runs = []
        for seed in args.seeds:
            timer = common.Timer()
            test, hist, extra = run_variant(VARIANTS[name], ds, seed, args.epochs)
            acc, loss = test["accuracy"], test["loss"]
            runs.append({"seed": seed, "test_accuracy": acc, "test_loss": loss, **extra,
                         "seconds": timer()})  # fmt: skip
            print(f"{name} seed {seed}: test accuracy {acc:.4f}, loss {loss:.3f} ({timer()} s)")
            if seed == args.seeds[0]:
                curves[name] = hist
                confusion[f"{name}, seed {seed}"] = test["confusion_matrix"]
        results["variants"][name] = {
            "config": VARIANTS[name],
            "test_accuracy": common.mean_std([r["test_accuracy"] for r in runs]),
            "test_loss": common.mean_std([r["test_loss"] for r in runs]),
            "runs": runs,
        }
    results["curves_seed0"] = curves
    results["seconds"] = total()
    common.save_json(results, out / "results.json")
    common.plot_curves(
        curves, ["loss", "val_loss", "val_accuracy"], out / "curves.png",
        f"MNIST-1D MLP 100-100, seed {args.seeds[0]} (val = 10% of train)",
    )  # fmt: skip
    shown = {k: v for k, v in confusion.items() if k.split(",")[0] in ("baseline", "combined")}
    common.plot_confusions(shown or confusion, ds.class_names, out / "confusion.png")
    for name, r in results["variants"].items():
        a, l = r["test_accuracy"], r["test_loss"]
        print(f"{name:15s} acc {a['mean']:.3f} +- {a['std']:.3f}  loss {l['mean']:.3f}")
    print(f"total {results['seconds']} s; wrote {out}")


if __name__ == "__main__":
    main()
