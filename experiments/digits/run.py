"""Digits 8x8: an MLP and a small CNN, with per-class precision, recall and F1.

scikit-learn's digits (1797 images, 8x8, the test part of UCI optdigits) with the
fixed stratified 80/20 split of ``jaxnets.data.load("digits")`` (seed 0). The
per-class metrics come from `jaxnets.metrics` (on-device confusion-matrix sums)
and are checked against ``sklearn.metrics.classification_report`` on the same
predictions. The baseline is scikit-learn's ``LogisticRegression`` on the same split.

Models:
* MLP: 64 -> 128 ReLU -> 10 (`jaxnets.models.MLP`), Adam 1e-3, 60 epochs, batch 32;
* CNN: the zoo's ``convnet_bn`` sized for 8x8 (Conv32-BN-ReLU, Conv64/2-BN-ReLU,
  global average pooling, Dense), Adam 3e-3 with cosine decay, 40 epochs, batch 32
  (the decay lets BatchNorm's running statistics catch up with the final weights). (The zoo's ``cnn``
  needs at least 10x10 inputs: its two valid 3x3 convolutions and 2x2 poolings
  shrink 8x8 to nothing.)

Usage:
  python experiments/digits/run.py [--quick] [--seeds 0 1 2] [--out DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import common  # noqa: E402
import numpy as np  # noqa: E402

from jaxnets import models  # noqa: E402
from jaxnets.training import create_train_state, evaluate, fit, predict  # noqa: E402

METRICS = ["accuracy", "precision_per_class", "recall_per_class", "f1_per_class", "f1"]
CONFIGS = {
    "mlp": dict(image=False, lr=1e-3, epochs=60, schedule=None),
    "cnn": dict(image=True, lr=3e-3, epochs=40, schedule="cosine"),
}


def build(name: str):
    if name == "mlp":
        return models.MLP(features=(128,), input_shape=(64,))
    return models.get("convnet_bn", filters=(32, 64), strides=(1, 2), input_shape=(8, 8, 1))


def check_against_sklearn(scores: dict, y_true, y_pred) -> float:
    """Largest gap between jaxnets' per-class metrics and sklearn's classification_report."""
    from sklearn.metrics import classification_report

    report = classification_report(y_true, y_pred, output_dict=True, zero_division=0)
    gap = 0.0
    for ours, theirs in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score")):
        ref = np.array([report[str(c)][theirs] for c in range(10)])
        gap = max(gap, float(np.abs(scores[f"{ours}_per_class"] - ref).max()))
    gap = max(gap, abs(scores["f1"] - report["macro avg"]["f1-score"]))
    gap = max(gap, abs(scores["accuracy"] - report["accuracy"]))
    if gap > 1e-5:
        raise AssertionError(f"jaxnets metrics differ from sklearn's by {gap}")
    return gap


def sklearn_baseline(ds) -> float:
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(max_iter=2000).fit(ds.x_train, ds.y_train)
    return float(clf.score(ds.x_test, ds.y_test))


def main():
    p = common.parser(__doc__.splitlines()[0])
    args = p.parse_args()
    out = common.out_dir(args, __file__)
    if args.quick:
        args.seeds = args.seeds[:1]
    total = common.Timer()
    results = {"machine": common.machine(), "models": {}}
    results["baseline_logistic_regression"] = sklearn_baseline(common.load("digits"))
    curves = {}
    for name, cfg in CONFIGS.items():
        ds = common.load("digits", image=cfg["image"])
        epochs = 2 if args.quick else cfg["epochs"]
        runs = []
        for seed in args.seeds:
            timer = common.Timer()
            state = create_train_state(
                build(name), "adam", ds.x_train[:1], learning_rate=cfg["lr"], seed=seed,
                schedule=cfg["schedule"], total_steps=epochs * -(-len(ds.x_train) // 32),
                metrics=METRICS,
            )  # fmt: skip
            state, hist = fit(
                state, (ds.x_train, ds.y_train), epochs=epochs, batch_size=32, seed=seed,
                validation_data=(ds.x_test, ds.y_test), verbose=0, fuse="epoch",
            )  # fmt: skip
            scores = evaluate(state, (ds.x_test, ds.y_test))
            y_pred = predict(state, ds.x_test).argmax(-1)
            gap = check_against_sklearn(scores, ds.y_test, y_pred)
            runs.append(
                {"seed": seed, "test_accuracy": scores["accuracy"], "macro_f1": scores["f1"],
                 "max_gap_vs_sklearn": gap, "seconds": timer()}
            )  # fmt: skip
            print(f"{name} seed {seed}: accuracy {scores['accuracy']:.4f} ({timer()} s)")
            if seed == args.seeds[0]:
                curves[name] = {k: v for k, v in hist.items() if "per_class" not in k}
                per_class = {k: scores[k] for k in METRICS if k.endswith("per_class")}
                from sklearn.metrics import confusion_matrix

                common.plot_confusion(
                    confusion_matrix(ds.y_test, y_pred), ds.class_names,
                    out / f"confusion_{name}.png", f"digits {name}, test, seed {seed}",
                )  # fmt: skip
        results["models"][name] = {
            "epochs": epochs,
            "learning_rate": cfg["lr"],
            "schedule": cfg["schedule"],
            "test_accuracy": common.mean_std([r["test_accuracy"] for r in runs]),
            "macro_f1": common.mean_std([r["macro_f1"] for r in runs]),
            "per_class_seed0": per_class,
            "runs": runs,
        }
    results["curves_seed0"] = curves
    results["seconds"] = total()
    common.save_json(results, out / "results.json")
    common.plot_curves(curves, ["loss", "val_loss", "val_accuracy"], out / "curves.png", "digits")
    for name, r in results["models"].items():
        a = r["test_accuracy"]
        print(f"{name}: accuracy {a['mean']:.4f} +- {a['std']:.4f}")
        print("  class  precision recall f1")
        pc = r["per_class_seed0"]
        for c in range(10):
            print(
                f"  {c:5d}  {pc['precision_per_class'][c]:.3f}     "
                f"{pc['recall_per_class'][c]:.3f}  {pc['f1_per_class'][c]:.3f}"
            )
    print(f"baseline (sklearn LogisticRegression): {results['baseline_logistic_regression']:.4f}")
    print(f"total {results['seconds']} s; wrote {out}")


if __name__ == "__main__":
    main()
