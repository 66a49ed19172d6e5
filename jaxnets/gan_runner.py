"""What ``jaxnets train --model <a GAN part>`` does: train the generator/discriminator pair.

Either name of a family (``gan_mlp_generator`` / ``gan_mlp_discriminator``,
``dcgan_generator`` / ``dcgan_discriminator``) trains the same pair with the
pure `jaxnets.models.gan.gan_train_step`, jit-compiled once, on the images of
a classification dataset scaled to the generator's ``tanh`` range [-1, 1]
(digits as 8x8x1 images by default; the MLP pair flattens them, so any
fixed-shape real-valued data fits it). Each epoch prints the mean ``d_loss``,
``g_loss`` and the discriminator's mean probabilities on real and fake rows.

The quality numbers at the end are honest and simple (`gan_quality`): the
discriminator's accuracy at telling the test split's real images from as many
fakes (0.5: it cannot tell them apart; a weak discriminator scores 0.5 too,
so it measures the pair together), and the gap between the average fake and
the average test image. Neither sees mode collapse: look at ``samples.png``.

With ``--workdir`` the run writes ``config.json``, checkpoints the `GANState`
after every epoch into ``checkpoints/`` (`jaxnets.checkpoint`), and at the end
``history.json``, ``history.csv``, ``test_metrics.json`` and ``samples.png``
(64 samples from fixed noise). Running the same command again resumes after
the last saved epoch with bitwise the same result as an uninterrupted run:
the batch order of epoch ``e`` depends only on ``(seed, e)`` and each step's
noise only on ``(state.key, state.step)``. ``jaxnets evaluate --workdir``
restores the newest checkpoint and prints the same test numbers.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxnets import compile as compile_lib
from jaxnets import data as data_lib
from jaxnets import models as models_lib
from jaxnets import optim, recipes, runner
from jaxnets.checkpoint import CheckpointManager
from jaxnets.checkpoint.resume import CHECKPOINT_DIR
from jaxnets.errors import ConfigError
from jaxnets.models.gan import GANState, gan_train_step, save_sample_grid

SAMPLES = 64  # images in samples.png, an 8x8 grid
EVAL_BATCH = 500  # test rows per compiled evaluation call
_LOGGED = ("d_loss", "g_loss", "d_real", "d_fake")  # what gan_train_step reports, in print order
# Noise for samples and evaluation comes from its own key, never one training used.
_EVAL_SALT = 0x5EED


def _check_options(args):
    """Refuses the options of ``jaxnets train`` that a GAN run does not implement."""
    unsupported = [
        ("--devices", getattr(args, "devices", None) not in (None, 1)),
        ("--accumulate", (getattr(args, "accumulate", None) or 1) != 1),
        ("--fuse", getattr(args, "fuse", None) is not None),
        ("--val-fraction", bool(args.val_fraction)),
        ("--save-every N", getattr(args, "save_every", "epoch") != "epoch"),
        (
            "multi-process options",
            any(getattr(args, k, None) for k in ("coordinator", "num_processes", "distributed")),
        ),
    ]
    given = [flag for flag, bad in unsupported if bad]
    if given:
        raise ConfigError(
            f"{args.model} trains a GAN pair on one device, holds out no validation data and "
            f"checkpoints after every epoch; drop {', '.join(given)}."
        )
    if args.epochs <= 0 or args.batch_size <= 0:
        raise ConfigError("--epochs and --batch-size must be positive integers.")


def load_images(config: dict) -> tuple[np.ndarray, np.ndarray, str]:
    """``(x_train, x_test, dataset name)`` scaled to [-1, 1], checked against the pair.

    Raises `ConfigError` (before anything is traced) for data the pair cannot model.
    """
    model, name = config["model"], config["dataset"]
    kwargs = recipes.dataset_options(model, name)
    if config.get("data_dir"):
        kwargs["data_dir"] = config["data_dir"]
    ds = data_lib.load(name, **kwargs)
    generator = recipes.gan_pair(model)[0]
    if ds.task in ("language_modeling", "tagging") or not np.issubdtype(
        ds.x_train.dtype, np.floating
    ):
        raise ConfigError(
            f"{generator} generates real-valued examples; {ds.name} holds int tokens. "
            "Use an image dataset such as --dataset digits or fashion_mnist."
        )
    shape = ds.input_shape
    if generator.startswith("dcgan") and (len(shape) != 3 or shape[0] % 4 or shape[1] % 4):
        raise ConfigError(
            f"{generator} needs images (H, W, C) with H and W multiples of 4 (two stride-2 "
            f"layers), e.g. --dataset digits (8, 8, 1) or fashion_mnist (28, 28, 1); "
            f"{ds.name} has examples of shape {shape}."
        )
    # One affine map for every value (not per feature): images keep their contrast,
    # and the generator's tanh range covers the data.
    lo, hi = float(ds.x_train.min()), float(ds.x_train.max())
    if not hi > lo:
        raise ConfigError(f"{ds.name}'s training inputs are constant; a GAN cannot learn them.")

    def scale(x):
        return ((x - lo) * (2.0 / (hi - lo)) - 1.0).astype(np.float32)

    return scale(ds.x_train), scale(ds.x_test), ds.name


def build_pair(model: str, example_shape: tuple[int, ...]):
    """The generator and discriminator of ``model``'s family, sized for ``example_shape``."""
    g_name, d_name = recipes.gan_pair(model)
    shape_field = "image_shape" if g_name.startswith("dcgan") else "output_shape"
    generator = models_lib.get(g_name, **{shape_field: tuple(example_shape)})
    return generator, models_lib.get(d_name, input_shape=tuple(example_shape))


def make_gan_state(config: dict, example_shape, total_steps: int) -> GANState:
    """A fresh `GANState`: both players get the run's optimizer and learning rate."""

    def optimizer():
        # Adam with b1=0.5 (Radford et al. 2015, section 4): less momentum keeps
        # the two players from chasing each other's stale gradients.
        kwargs = {"b1": 0.5} if config["optimizer"].lower() in ("adam", "adamw") else {}
        return optim.make_optimizer(
            config["optimizer"],
            config["lr"],
            schedule=config.get("schedule"),
            total_steps=total_steps,
            weight_decay=config.get("weight_decay"),
            **kwargs,
        )

    generator, discriminator = build_pair(config["model"], example_shape)
    key = jax.random.key(config["seed"])
    return GANState.create(generator, discriminator, optimizer(), optimizer(), key)


@dataclasses.dataclass(frozen=True)
class _CheckpointView:
    """A `GANState` under the field names `CheckpointManager` saves (those of a TrainState)."""

    gan: GANState

    @property
    def step(self):
        return self.gan.step

    @property
    def params(self):
        return {"generator": self.gan.g_params, "discriminator": self.gan.d_params}

    @property
    def opt_state(self):
        return {"generator": self.gan.g_opt_state, "discriminator": self.gan.d_opt_state}

    @property
    def rng(self):
        return self.gan.key

    model_state = None  # no BatchNorm: nothing else changes
    skipped = None
    loss_scale = None
    hparams = None

    def replace(self, *, step, params, opt_state, rng, **unused):
        gan = self.gan.replace(
            step=step,
            key=rng,
            g_params=params["generator"],
            d_params=params["discriminator"],
            g_opt_state=opt_state["generator"],
            d_opt_state=opt_state["discriminator"],
        )
        return _CheckpointView(gan)


def _discriminate(state: GANState, real, mask, key):
    """Discriminator logits ``(B,)`` on real rows and on as many fresh fakes, and the
    sum of the fakes of ``mask``ed-in rows."""
    z = jax.random.normal(key, (real.shape[0], state.generator.latent_dim))
    fake = state.generator.apply({"params": state.g_params}, z)
    both = jnp.concatenate([real, fake])  # one discriminator call for the two halves
    logits = state.discriminator.apply({"params": state.d_params}, both)
    fake_sum = jnp.tensordot(mask, fake, axes=1)  # (*example_shape)
    return logits[: real.shape[0]], logits[real.shape[0] :], fake_sum


def gan_quality(state: GANState, x_test: np.ndarray, seed: int) -> dict:
    """Two simple numbers on the test split, with as many fakes as test rows.

    ``real_vs_fake_accuracy``: how often the discriminator calls test images real
    and fakes fake (0.5: it cannot tell them apart). ``mean_image_gap``: the mean
    absolute difference, per value in [-1, 1] units, between the average fake and
    the average test example (0: the average sample looks like the average image).
    """
    key = jax.random.fold_in(jax.random.key(seed), _EVAL_SALT)
    score = jax.jit(_discriminate)
    outs, masks = [], []
    for i, batch in enumerate(data_lib.iterate_batches({"x": x_test}, EVAL_BATCH)):
        outs.append(score(state, batch["x"], batch["mask"], jax.random.fold_in(key, i)))
        masks.append(batch["mask"])
    outs = jax.device_get(outs)  # one transfer for the whole split
    valid = np.concatenate(masks) > 0
    real = np.concatenate([o[0] for o in outs])[valid]
    fake = np.concatenate([o[1] for o in outs])[valid]
    fake_mean = np.sum([o[2] for o in outs], axis=0) / len(x_test)
    real_acc, fake_acc = float(np.mean(real > 0)), float(np.mean(fake <= 0))
    return {
        "real_accuracy": real_acc,
        "fake_accuracy": fake_acc,
        "real_vs_fake_accuracy": (real_acc + fake_acc) / 2,
        "mean_image_gap": float(np.mean(np.abs(fake_mean - x_test.mean(axis=0)))),
    }


def write_samples(state: GANState, path: Path, seed: int) -> bool:
    """Writes ``SAMPLES`` generated images as one PNG grid; False for non-image data."""
    key = jax.random.fold_in(jax.random.key(seed), _EVAL_SALT + 1)
    z = jax.random.normal(key, (SAMPLES, state.generator.latent_dim))
    images = np.asarray(jax.jit(state.generator.apply)({"params": state.g_params}, z))
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        return False
    save_sample_grid(images, path, ncols=8)
    return True


def _final_losses(history: dict) -> dict:
    """The last epoch's mean losses (NaN before any epoch ran)."""
    return {f"final_{k}": (history.get(k) or [float("nan")])[-1] for k in ("d_loss", "g_loss")}


def _report(test: dict) -> str:
    """The final training losses and the test numbers, as printed at the end."""
    losses = " - ".join(f"{k}: {test[f'final_{k}']:.4f}" for k in ("d_loss", "g_loss"))
    return (
        f"last epoch: {losses}\n"
        f"test: real-vs-fake accuracy of the discriminator: {test['real_vs_fake_accuracy']:.4f} "
        f"(real {test['real_accuracy']:.4f}, fake {test['fake_accuracy']:.4f}; 0.5 = it cannot "
        f"tell them apart) - mean image gap: {test['mean_image_gap']:.4f}"
    )


def _epoch(step, state, x_train, config, epoch):
    """One epoch; returns the state and its mean metrics (fetched to host once)."""
    metrics, weights = [], []
    # Every batch has batch_size rows (the last one padded, its padding masked
    # out of both losses), so the step compiles once and no example is dropped.
    for batch in data_lib.iterate_batches(
        {"x": x_train}, config["batch_size"], shuffle_seed=config["seed"], epoch=epoch
    ):
        state, m = step(state, batch)
        metrics.append(m)
        weights.append(float(batch["mask"].sum()))
    host = jax.device_get(metrics)
    # Batch means weighted by real rows: the mean over the epoch's examples.
    return state, {k: float(np.average([m[k] for m in host], weights=weights)) for k in _LOGGED}


def train(args) -> dict:
    """Runs ``jaxnets train`` for a GAN part; returns the test metrics."""
    _check_options(args)
    # Either part's name trains the same pair: record it under the generator's name,
    # so the two commands share (and resume) one workdir.
    config = {**runner.run_config(args), "model": recipes.gan_pair(args.model)[0]}
    if getattr(args, "no_compile_cache", False):
        compile_lib.disable_cache()
    compile_lib.ensure_default_cache()
    workdir = Path(args.workdir) if args.workdir else None
    if workdir is not None:
        runner.check_same_run(workdir, config)
    x_train, x_test, name = load_images(config)
    steps_per_epoch = data_lib.num_batches(len(x_train), config["batch_size"])
    state = make_gan_state(config, x_train.shape[1:], args.epochs * steps_per_epoch)
    g, d = state.generator, state.discriminator
    n_g, n_d = (sum(x.size for x in jax.tree.leaves(p)) for p in (state.g_params, state.d_params))
    print(
        f"jaxnets train: GAN {type(g).__name__} ({n_g:,} parameters) + {type(d).__name__} "
        f"({n_d:,}) dataset={name} {x_train.shape[1:]} in [-1, 1] "
        f"({len(x_train)} train / {len(x_test)} test) on {jax.devices()[0].platform}"
    )
    history: dict[str, list[float]] = {}
    start_epoch, manager = 0, None
    if workdir is not None:
        runner.make_workdir(workdir)
        runner.write_config(workdir, config)
        manager = CheckpointManager(workdir / CHECKPOINT_DIR, keep=3, monitor=None)
        if manager.latest_step() is not None:
            run = manager.restore(_CheckpointView(state))
            state, start_epoch, history = run.state.gan, run.epoch, run.history
            print(f"resuming from {manager.directory} step {run.step} (after epoch {run.epoch})")
    step = jax.jit(gan_train_step, donate_argnums=0)
    start = time.perf_counter()
    try:
        for epoch in range(start_epoch, args.epochs):
            tic = time.perf_counter()
            state, logs = _epoch(step, state, x_train, config, epoch)
            for k, v in logs.items():
                history.setdefault(k, []).append(v)
            if args.verbose:
                text = " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())
                print(
                    f"Epoch {epoch + 1}/{args.epochs} - {text} ({time.perf_counter() - tic:.1f}s)"
                )
            if manager is not None:
                manager.save(_CheckpointView(state), epoch=epoch + 1, history=history)
    finally:
        if manager is not None:
            manager.close()
    seconds = time.perf_counter() - start
    test = {**_final_losses(history), **gan_quality(state, x_test, config["seed"])}
    print(f"{_report(test)} ({seconds:.1f}s training)")
    if workdir is not None:
        runner.write_history(workdir, history)
        (workdir / "test_metrics.json").write_text(json.dumps(test, indent=1))
        wrote = "samples.png, " if write_samples(state, workdir / "samples.png", args.seed) else ""
        print(
            f"wrote {workdir}/config.json, history.json, history.csv, test_metrics.json, "
            f"{wrote}checkpoints/"
        )
    return test


def restore_gan_state(workdir: Path, config: dict, example_shape) -> tuple[GANState, dict]:
    """The newest checkpointed `GANState` of a run and its history (read-only)."""
    target = make_gan_state(config, example_shape, total_steps=1)
    with CheckpointManager(workdir / CHECKPOINT_DIR, read_only=True, monitor=None) as mngr:
        run = mngr.restore(_CheckpointView(target))
    return run.state.gan, run.history


def evaluate_workdir(path: Path, config: dict) -> dict:
    """``jaxnets evaluate`` for a GAN run: restore the newest checkpoint, test real vs fake."""
    _, x_test, _ = load_images(config)
    state, history = restore_gan_state(Path(path), config, x_test.shape[1:])
    test = {**_final_losses(history), **gan_quality(state, x_test, config["seed"])}
    print(_report(test))
    return test
