"""DCGAN on the 8x8 digits, judged by a classifier trained on real digits.

The zoo's DCGAN pair (`jaxnets.models.gan`: generator Dense -> two stride-2
transposed convolutions -> tanh; discriminator two stride-2 convolutions with
LeakyReLU -> one logit), sized for 8x8x1, trained with the pure ``gan_train_step``
(non-saturating loss, Adam 2e-4, beta1 0.5) on the 1437 training digits scaled to
[-1, 1].

Quantitative check: a small MLP trained on the real training digits (its test
accuracy is reported) scores 1000 samples from the trained generator, from the
same generator untrained, and 360 real held-out digits:

* ``confidence``: the classifier's mean top-class probability;
* ``inception_score``: ``exp(E_x KL(p(y|x) || p(y)))`` with this classifier (10 at
  best: confident and all classes equally often);
* ``class_entropy``: entropy (nats) of the predicted-class histogram (log 10 = 2.303 at best);
* ``frechet_distance``: the Frechet distance between Gaussians fitted to the
  classifier's hidden features of the samples and of the real training digits (an
  FID computed with this digits classifier instead of Inception).

Usage:
  python experiments/gan/run.py [--quick] [--seeds 0 1 2] [--steps 4000]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import common  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from jaxnets import models  # noqa: E402
from jaxnets.models.gan import DCGANDiscriminator, DCGANGenerator  # noqa: E402
from jaxnets.training import create_train_state, evaluate, fit  # noqa: E402


def train_classifier(ds, epochs: int):
    state = create_train_state(
        models.MLP(features=(128,), input_shape=(8, 8, 1)), "adam", ds.x_train[:1],
        learning_rate=1e-3,
    )  # fmt: skip
    state, _ = fit(state, (ds.x_train, ds.y_train), epochs=epochs, batch_size=32, verbose=0)
    return state, evaluate(state, (ds.x_test, ds.y_test))["accuracy"]


def classify(clf, images01):
    """Class probabilities and the hidden (ReLU) features of ``images01`` in [0, 1]."""
    logits, inter = clf.apply_fn(
        clf.variables, images01, capture_intermediates=True, mutable=["intermediates"]
    )
    features = inter["intermediates"]["dense_0"]["__call__"][0]
    return np.asarray(jax.nn.softmax(logits)), np.asarray(features, np.float64)


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """``|mu_a - mu_b|^2 + tr(A + B - 2 (A B)^1/2)`` of Gaussians fitted to two feature sets."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # tr (A B)^1/2 = tr (A^1/2 B A^1/2)^1/2, a symmetric PSD root: stable for singular A or B.
    w, v = np.linalg.eigh(cov_a)
    half = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(half @ cov_b @ half), 0, None)).sum()
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * cross)


def scores(clf, images01, real_features) -> dict:
    probs, feats = classify(clf, images01)
    marginal = probs.mean(0)
    kl = np.sum(probs * (np.log(probs + 1e-12) - np.log(marginal + 1e-12)), axis=1)
    hist = np.bincount(probs.argmax(1), minlength=10) / len(probs)
    return {
        "confidence": float(probs.max(1).mean()),
        "inception_score": float(np.exp(kl.mean())),
        "class_entropy": float(-np.sum(hist * np.log(hist + 1e-12))),
        "frechet_distance": frechet(feats, real_features),
        "class_histogram": hist,
    }


def sample(state, params, n: int, seed: int):
    z = jax.random.normal(jax.random.key(seed), (n, state.generator.latent_dim))
    return np.asarray(state.generator.apply({"params": params}, z))  # [-1, 1]


def train_gan(ds, steps: int, seed: int, batch: int = 64):
    real = ds.x_train * 2.0 - 1.0  # [0, 1] -> [-1, 1], like the tanh output
    state = models.GANState.create(
        DCGANGenerator(latent_dim=16, filters=32, image_shape=(8, 8, 1)),
        DCGANDiscriminator(filters=32, input_shape=(8, 8, 1)),
        optax.adam(2e-4, b1=0.5),
        optax.adam(2e-4, b1=0.5),
        jax.random.key(seed),
    )
    untrained = jax.device_get(state.g_params)  # a host copy: the steps donate the state
    step_fn = jax.jit(models.gan_train_step, donate_argnums=0)
    rng = np.random.default_rng(seed)
    log, pending = {k: [] for k in ("d_loss", "g_loss", "d_real", "d_fake")}, []
    for i in range(steps):
        state, metrics = step_fn(state, {"x": real[rng.integers(0, len(real), batch)]})
        pending.append(metrics)
        if (i + 1) % 100 == 0 or i + 1 == steps:
            got = jax.device_get(pending)
            for k in log:
                log[k].append(float(np.mean([m[k] for m in got])))
            pending = []
    return state, untrained, log


def compare(real, untrained, trained, path):
    """The three 8x8 grids side by side, enlarged (the raw grids are 73 pixels wide)."""
    plt = common.pyplot()

    from jaxnets.models.gan import sample_grid

    fig, axes = plt.subplots(1, 3, figsize=(9, 3.3))
    for ax, images, title in zip(
        axes, (real, untrained, trained), ("real (test)", "untrained G", "trained G"), strict=True
    ):
        ax.imshow(sample_grid(images, 8), cmap="gray", interpolation="nearest")
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main():
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=4000)
    args = p.parse_args()
    if args.quick:
        args.steps, args.seeds = 20, args.seeds[:1]
    out = common.out_dir(args, __file__)
    total = common.Timer()
    ds = common.load("digits", image=True)
    clf, clf_acc = train_classifier(ds, 2 if args.quick else 40)
    print(f"judge classifier: test accuracy {clf_acc:.4f}")
    _, real_features = classify(clf, ds.x_train)
    results = {
        "machine": common.machine(),
        "steps": args.steps,
        "judge_test_accuracy": clf_acc,
        "real_heldout": scores(clf, ds.x_test, real_features),
        "runs": [],
    }
    for seed in args.seeds:
        timer = common.Timer()
        state, untrained, log = train_gan(ds, args.steps, seed)
        fake = sample(state, state.g_params, 1000, seed + 100)
        fresh = sample(state, untrained, 1000, seed + 100)
        run = {
            "seed": seed,
            "trained": scores(clf, (fake + 1) / 2, real_features),
            "untrained": scores(clf, (fresh + 1) / 2, real_features),
            "seconds": timer(),
        }
        results["runs"].append(run)
        print(
            f"seed {seed}: trained FD {run['trained']['frechet_distance']:.2f} "
            f"IS {run['trained']['inception_score']:.2f}; untrained FD "
            f"{run['untrained']['frechet_distance']:.2f} IS "
            f"{run['untrained']['inception_score']:.2f} ({timer()} s)"
        )
        if seed == args.seeds[0]:
            models.save_sample_grid(fake[:64], out / "samples_trained.png", ncols=8)
            models.save_sample_grid(fresh[:64], out / "samples_untrained.png", ncols=8)
            models.save_sample_grid(ds.x_test[:64], out / "samples_real.png", 8, (0.0, 1.0))
            compare(ds.x_test[:64] * 2 - 1, fresh[:64], fake[:64], out / "samples.png")
            curves = {"gan": {k: v for k, v in log.items()}}
            common.plot_curves(
                curves, list(log), out / "curves.png", "DCGAN on digits 8x8", "x100 steps"
            )
            results["curves_seed0"] = log
    for which in ("trained", "untrained"):
        results[which] = {
            k: common.mean_std([r[which][k] for r in results["runs"]])
            for k in ("confidence", "inception_score", "class_entropy", "frechet_distance")
        }
    results["seconds"] = total()
    common.save_json(results, out / "results.json")
    for which in ("trained", "untrained"):
        r = results[which]
        print(
            f"{which:9s} confidence {r['confidence']['mean']:.3f} IS "
            f"{r['inception_score']['mean']:.2f} FD {r['frechet_distance']['mean']:.2f}"
        )
    r = results["real_heldout"]
    print(f"real      confidence {r['confidence']:.3f} IS {r['inception_score']:.2f} FD "
          f"{r['frechet_distance']:.2f}")  # fmt: skip
    print(f"total {results['seconds']} s; wrote {out}")


if __name__ == "__main__":
    main()
