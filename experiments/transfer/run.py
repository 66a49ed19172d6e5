"""Transfer learning on Fashion-MNIST: pretrain on classes 0-4, fine-tune on 100 images per class of 5-9.

1. Pretrain the zoo ``cnn`` (Conv32-Pool-Conv64-Pool-Dense) on all 30,000 training
   images of T-shirt, Trouser, Pullover, Dress and Coat (classes 0-4) for 4 epochs,
   with ``fit(workdir=...)``: checkpointed every epoch, resumed if interrupted.
2. For each seed, draw 100 labelled training images of each of Sandal, Shirt,
   Sneaker, Bag and Ankle boot (classes 5-9, relabelled 0-4) and train three
   models on those 500 images with the same optimizer (Adam, 1e-3), batch size
   (32) and number of epochs (30):
   * **frozen backbone**: a fresh ``cnn`` whose convolutions are loaded from the
     pretraining checkpoint (`jaxnets.checkpoint.load_pretrained`, dropping the old
     head with ``rename={"logits": None}``) and frozen (`freeze_params`); only the
     new Dense head trains;
   * **gradual unfreezing**: the same start; `GradualUnfreezing` unfreezes
     ``conv_1`` after 1/10 and ``conv_0`` after 2/10 of the epochs, which then train
     at 1e-4 while the head keeps 1e-3;
   * **from scratch**: the same ``cnn``, randomly initialized, everything trains.
3. Report accuracy on all 5,000 test images of classes 5-9 after 5, 10 and 30
   fine-tuning epochs (mean and std over seeds).

Usage:
  python experiments/transfer/run.py [--quick] [--seeds 0 1 2] [--out DIR] [--workdir DIR]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import common  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

from jaxnets import models  # noqa: E402
from jaxnets.callbacks import Callback  # noqa: E402
from jaxnets.checkpoint import GradualUnfreezing, freeze_params, load_pretrained  # noqa: E402
from jaxnets.training import create_train_state, evaluate, fit  # noqa: E402

BACKBONE = ["conv_.*"]


def subset(x, y, classes, per_class, seed):
    """``per_class`` random rows of each class (all if None), labels renumbered 0..k-1."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in classes:
        idx = np.flatnonzero(y == c)
        rows.append(idx if per_class is None else rng.choice(idx, per_class, replace=False))
    rows = rng.permutation(np.concatenate(rows))
    relabel = np.full(10, -1, np.int32)
    relabel[list(classes)] = np.arange(len(classes))
    return x[rows], relabel[y[rows]]


def new_state(x, seed, optimizer="adam"):
    model = models.get("cnn", num_classes=5)
    return create_train_state(model, optimizer, x[:1], learning_rate=1e-3, seed=seed)


def pretrain(ds, args, workdir: Path):
    x, y = subset(ds.x_train, ds.y_train, range(5), None, seed=0)
    if args.pretrain_images:
        x, y = x[: args.pretrain_images], y[: args.pretrain_images]
    timer = common.Timer()
    state, history = fit(
        new_state(x, seed=100), (x, y), epochs=args.pretrain_epochs, batch_size=128,
        seed=0, verbose=2, workdir=workdir,
    )  # fmt: skip
    print(
        f"pretrained on {len(x)} images of classes 0-4: {timer()}s, loss {history['loss'][-1]:.4f}"
    )
    return timer()


class TestAccuracy(Callback):
    """Test accuracy after the epochs in ``budgets`` (the fine-tuning budgets compared)."""

    def __init__(self, test, budgets):
        super().__init__()
        self.test, self.budgets, self.accuracy = test, budgets, {}

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 in self.budgets:
            result = evaluate(self.model.state, self.test, batch_size=1000)
            self.accuracy[epoch + 1] = result["accuracy"]


def finetune(ds, test, args, workdir: Path, seed: int) -> dict:
    """``{arm: {epochs: test accuracy}}`` for one seed's 100 labelled images per class."""
    x, y = subset(ds.x_train, ds.y_train, range(5, 10), args.per_class, seed=seed)
    budgets = sorted({b for b in (5, 10, args.epochs) if b <= args.epochs})

    def transferred():
        state, report = load_pretrained(new_state(x, seed), workdir, rename={"logits": None})
        assert not report.skipped and report.missing == [
            "params/logits/bias",
            "params/logits/kernel",
        ]
        return state

    tenth = max(1, args.epochs // 10)
    unfreeze = GradualUnfreezing(
        {tenth: ["conv_1/.*"], 2 * tenth: ["conv_0/.*"]},
        freeze=BACKBONE,
        learning_rate={"conv_.*": 1e-4, ".*": 1e-3},
    )
    arms = {
        "frozen backbone": (lambda: freeze_params(transferred(), BACKBONE, learning_rate=1e-3), []),
        "gradual unfreezing": (lambda: unfreeze.prepare(transferred()), [unfreeze]),
        "from scratch": (lambda: new_state(x, seed), []),
    }
    results = {}
    for name, (make, callbacks) in arms.items():
        probe = TestAccuracy(test, budgets)
        fit(make(), (x, y), epochs=args.epochs, batch_size=32, seed=seed, verbose=0,
            callbacks=[*callbacks, probe])  # fmt: skip
        results[name] = probe.accuracy
    return results


def main():
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--workdir", type=Path, default=None, help="pretraining checkpoints")
    p.add_argument("--pretrain-images", type=int, default=None, help="default: all 30,000")
    p.add_argument("--pretrain-epochs", type=int, default=4)
    p.add_argument("--per-class", type=int, default=100, help="labelled images per new class")
    p.add_argument("--epochs", type=int, default=30, help="fine-tuning epochs")
    args = p.parse_args()
    if args.quick:
        args.pretrain_images, args.pretrain_epochs, args.per_class, args.epochs = 256, 1, 10, 1
        args.seeds = args.seeds[:1]
    out = common.out_dir(args, __file__)
    workdir = args.workdir or (
        Path(tempfile.mkdtemp(prefix="jaxnets_transfer_")) if args.quick else out / "runs"
    )
    ds = common.load("fashion_mnist")
    test = subset(ds.x_test, ds.y_test, range(5, 10), None, seed=0)
    if args.quick:
        test = (test[0][:500], test[1][:500])
    timer = common.Timer()
    pretrain_seconds = pretrain(ds, args, workdir / "pretrain")
    runs = [finetune(ds, test, args, workdir / "pretrain", seed) for seed in args.seeds]
    summary = {
        arm: {str(b): common.mean_std([r[arm][b] for r in runs]) for b in runs[0][arm]}
        for arm in runs[0]
    }
    budgets = list(runs[0]["from scratch"])
    print(f"test accuracy on classes 5-9 (mean +- std over seeds {args.seeds}) after")
    print(" " * 20 + "".join(f"{f'{b} epochs':>18}" for b in budgets))
    for arm, by_budget in summary.items():
        cells = "".join(f"{s['mean']:>11.4f} +-{s['std']:.3f}" for s in by_budget.values())
        print(f"{arm:>20}{cells}")
    common.save_json(
        {
            "config": {k: v for k, v in vars(args).items() if k not in ("out", "workdir")},
            "test_images": len(test[0]),
            "accuracy": summary,
            "pretrain_seconds": pretrain_seconds,
            "total_seconds": timer(),
            "machine": common.machine(),
            "jax_devices": str(jax.devices()),
        },
        out / "results.json",
    )
    print(f"total {timer()}s; wrote {out / 'results.json'}")


if __name__ == "__main__":
    main()
