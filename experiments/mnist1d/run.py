"""MNIST-1D: the paper's four reference models, trained with the paper's recipe.

Greydanus & Kobak 2020 (https://arxiv.org/abs/2011.14439) report test accuracies of
32% (logistic regression), 68% (MLP), 94% (CNN) and 91% (GRU), training each
model with Adam (learning rate 1e-2, no weight decay), batches of 100 for 6000
steps (150 epochs of the 4000 training signals). The models follow the reference
``mnist1d/models.py``:

* logistic regression: one Dense layer (`jaxnets.models.MLP` with no hidden layer);
* MLP: two hidden ReLU layers of 100 units;
* CNN: the zoo's ``cnn1d`` (three 25-channel strided convolutions, the paper's ``ConvBase``);
* GRU: a bidirectional GRU of 6 units per direction whose outputs at all 40 steps are
  flattened into the Dense head (the paper's ``GRUBase``), built from `jaxnets.layers`.

Two recipes are run for every model:

* ``paper``: Adam, learning rate 1e-2 constant, batch 100, 150 epochs (6000 steps);
* ``tuned``: AdamW, learning rate 1e-2 with linear warm-up (5%) and cosine decay,
  decoupled weight decay 0.1 (0 for logistic regression), batch 32, 100 epochs
  (12,500 steps). Chosen on seeds 0-2 among a handful of variants; see the README.

All seeds of one model and recipe train together as one population
(`jaxnets.population.fit_population`: the members are vmapped, each epoch is one
compiled scan); ``--no-population`` trains them one ``fit`` at a time instead. Member
``i`` takes the same steps as ``fit(..., seed=i)`` up to floating-point rounding
(about 1e-7 after an epoch), which over thousands of steps is enough to move the
final accuracy of a seed by a few tenths of a percent.

Usage:
  python experiments/mnist1d/run.py            # full study, 3 seeds
  python experiments/mnist1d/run.py --quick    # smoke test
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import common  # noqa: E402
import flax.linen as nn  # noqa: E402

from jaxnets import layers, models  # noqa: E402
from jaxnets.population import fit_population  # noqa: E402
from jaxnets.training import create_train_state, evaluate, fit  # noqa: E402

PUBLISHED = {"logistic": 0.32, "mlp": 0.68, "cnn": 0.94, "gru": 0.91}
RECIPES = {
    "paper": {"optimizer": "adam", "schedule": None, "decay": 0.0, "batch": 100, "epochs": 150},
    "tuned": {
        "optimizer": "adamw", "schedule": "warmup_cosine", "decay": 0.1, "batch": 32,
        "epochs": 100,
    },
}  # fmt: skip


class PaperGRU(nn.Module):
    """Bidirectional GRU over the signal, every step's output flattened into a Dense layer."""

    hidden_size: int = 6
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        x = x[..., None] if x.ndim == 2 else x  # (B, T, 1)
        gru = layers.GRU(self.hidden_size, return_sequences=True)
        x = layers.Bidirectional(gru)(x, train=train)  # (B, T, 2H)
        return layers.Dense(self.num_classes, name="logits")(x.reshape(x.shape[0], -1))


def build(name: str) -> nn.Module:
    if name == "logistic":
        return models.MLP(features=(), input_shape=(40,))
    if name == "mlp":
        return models.MLP(features=(100, 100), input_shape=(40,))
    if name == "cnn":
        return models.get("cnn1d")
    return PaperGRU()


def count_params(state) -> int:
    import jax

    return int(sum(x.size for x in jax.tree.leaves(state.params)))


def make_state(name: str, recipe: dict, seed: int, ds, epochs: int):
    steps = epochs * -(-len(ds.x_train) // recipe["batch"])
    return create_train_state(
        build(name),
        recipe["optimizer"],
        ds.x_train[:1],
        learning_rate=1e-2,
        schedule=recipe["schedule"],
        total_steps=steps,
        weight_decay=0.0 if name == "logistic" else recipe["decay"],
        seed=seed,
        metrics=["accuracy", "confusion_matrix"],
    )


def train_seeds(name: str, recipe: dict, seeds, ds, epochs: int, population: bool):
    """``[(state, history), ...]``, one per seed: one population run or one fit per seed."""
    train, test = (ds.x_train, ds.y_train), (ds.x_test, ds.y_test)
    if population:
        pop = fit_population(
            lambda seed: make_state(name, recipe, seed, ds, epochs), train, seeds=seeds,
            epochs=epochs, batch_size=recipe["batch"], validation_data=test, verbose=0,
        )  # fmt: skip
        return [(pop.member(i), pop.histories[i]) for i in range(len(seeds))]
    return [
        fit(
            make_state(name, recipe, seed, ds, epochs),
            train,
            epochs=epochs,
            batch_size=recipe["batch"],
            validation_data=test,
            seed=seed,
            verbose=0,
        )  # fmt: skip
        for seed in seeds
    ]


def main():
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(PUBLISHED), choices=list(PUBLISHED))
    p.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    p.add_argument(
        "--no-population", dest="population", action="store_false",
        help="one fit() per seed instead of one fit_population() over the seeds",
    )  # fmt: skip
    args = p.parse_args()
    if args.quick:
        args.seeds = args.seeds[:1]
    out = common.out_dir(args, __file__)
    ds = common.load("mnist1d")
    total = common.Timer()
    results = {"machine": common.machine(), "population": args.population, "recipes": {}}
    curves, confusion = {}, None
    for rname in args.recipes:
        recipe = RECIPES[rname]
        epochs = 1 if args.quick else recipe["epochs"]
        results["recipes"][rname] = {**recipe, "epochs": epochs, "models": {}}
        for name in args.models:
            runs, timer = [], common.Timer()
            trained = train_seeds(name, recipe, args.seeds, ds, epochs, args.population)
            for seed, (state, hist) in zip(args.seeds, trained, strict=True):
                scores = evaluate(state, (ds.x_test, ds.y_test))
                acc = scores["accuracy"]
                runs.append({"seed": seed, "test_accuracy": acc})
                print(f"{rname} {name} seed {seed}: test accuracy {acc:.4f}")
                if seed == args.seeds[0]:
                    curves[f"{name} ({rname})"] = {
                        k: v for k, v in hist.items() if "confusion" not in k
                    }
                    if name == "cnn" or confusion is None:
                        confusion = (f"{name} ({rname})", scores["confusion_matrix"])
            print(f"  {len(args.seeds)} seeds of {name} took {timer()} s")
            results["recipes"][rname]["models"][name] = {
                "test_accuracy": common.mean_std([r["test_accuracy"] for r in runs]),
                "seconds_all_seeds": timer(),
                "published": PUBLISHED[name],
                "params": count_params(state),
                "runs": runs,
            }
    results["curves_seed0"] = curves
    results["seconds"] = total()
    common.save_json(results, out / "results.json")
    common.plot_curves(
        curves,
        ["loss", "val_loss", "val_accuracy"],
        out / "curves.png",
        f"MNIST-1D, seed {args.seeds[0]} (val = the 1000 test signals)",
    )
    common.plot_confusion(
        confusion[1], ds.class_names, out / "confusion.png",
        f"MNIST-1D {confusion[0]}, test, seed {args.seeds[0]}",
    )  # fmt: skip
    for rname, rec in results["recipes"].items():
        for name, r in rec["models"].items():
            a = r["test_accuracy"]
            print(
                f"{rname:6s} {name:9s} {a['mean']:.3f} +- {a['std']:.3f}   "
                f"published {r['published']:.2f}"
            )
    print(f"total {results['seconds']} s; wrote {out}")


if __name__ == "__main__":
    main()
