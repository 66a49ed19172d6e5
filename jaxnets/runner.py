"""What ``jaxnets train`` and ``jaxnets evaluate`` do, as importable functions.

A run is described by a plain config dict (model, dataset, optimizer...). It is
written to ``<workdir>/config.json`` before training; checkpoints of the whole
run go to ``<workdir>/checkpoints`` (`jaxnets.checkpoint`, every epoch or every
``--save-every`` steps), so running the same command again resumes exactly
where it stopped (or does nothing if the run is complete; raise ``--epochs`` to
continue it). The history (``history.json``, ``history.csv``) and test metrics
follow at the end, and `evaluate_workdir` rebuilds the model from data alone
and restores the newest checkpoint: nothing is pickled.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import jax
import numpy as np

from jaxnets import compile as compile_lib
from jaxnets import data as data_lib
from jaxnets import recipes
from jaxnets.errors import ConfigError
from jaxnets.parallel import run as parallel_run
from jaxnets.training import create_train_state, evaluate, fit


def build_model(model: str, dataset: data_lib.Dataset):
    """Builds a zoo model sized for ``dataset`` (its number of classes or outputs)."""
    return recipes.build(model, dataset)


def load_dataset(config: dict) -> data_lib.Dataset:
    """The run's dataset, laid out for its model (see `jaxnets.recipes`)."""
    name = config.get("dataset") or recipes.default_dataset(config["model"])
    kwargs = {"val_fraction": config.get("val_fraction", 0.0)}
    if config.get("data_dir"):
        kwargs["data_dir"] = config["data_dir"]
    kwargs.update(recipes.dataset_options(config["model"], name))
    return recipes.adapt(config["model"], data_lib.load(name, **kwargs))


def make_state(config: dict, dataset, total_steps: int):
    loss, metrics = recipes.loss_and_metrics(config["model"], dataset)
    module = build_model(config["model"], dataset)
    return create_train_state(
        module,
        config["optimizer"],
        dataset.x_train[:1],
        loss=loss,
        metrics=metrics,
        seed=config["seed"],
        learning_rate=config["lr"],
        schedule=config.get("schedule"),
        total_steps=total_steps,
        weight_decay=config.get("weight_decay"),
    )


def _validation(dataset):
    if dataset.x_val is None:
        return None
    return (dataset.x_val, dataset.y_val)


def write_history(workdir: Path, history: dict):
    scalars = {k: v for k, v in history.items() if all(isinstance(x, float) for x in v)}
    (workdir / "history.json").write_text(json.dumps(scalars, indent=1))
    with open(workdir / "history.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", *scalars])
        for i, row in enumerate(zip(*scalars.values(), strict=True)):
            writer.writerow([i, *row])


def check_same_run(workdir: Path, config: dict):
    """Raises `ConfigError` if ``workdir`` holds a run with another config (epochs may grow)."""
    path = workdir / "config.json"
    if not path.exists():
        return
    old = json.loads(path.read_text())
    diffs = [
        f"{k}: {old.get(k)!r} -> {config.get(k)!r}"
        for k in sorted(set(old) | set(config))
        if k not in ("epochs", "save_every") and old.get(k) != config.get(k)
    ]
    if diffs:
        raise ConfigError(
            f"{workdir} holds a run with another configuration ({'; '.join(diffs)}); "
            "resume it with the same options (only --epochs may change) or use a new --workdir."
        )


def restore_weights(path: Path, state):
    """Restores final weights written by older versions (``<workdir>/weights``)."""
    import orbax.checkpoint as ocp

    target = {"params": state.params, "model_state": state.model_state}
    with ocp.StandardCheckpointer() as ckptr:
        tree = ckptr.restore(path.absolute(), target)
    return state.replace(params=tree["params"], model_state=tree["model_state"])


def run_config(args) -> dict:
    """The run's configuration, as written to ``<workdir>/config.json``."""
    return {
        "model": args.model,
        "dataset": args.dataset or recipes.default_dataset(args.model),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "optimizer": args.optimizer,
        "lr": args.lr,
        "schedule": args.schedule,
        "weight_decay": args.weight_decay,
        "seed": args.seed,
        "val_fraction": args.val_fraction,
        "data_dir": args.data_dir,
        "save_every": getattr(args, "save_every", "epoch"),
    }


def train(args) -> dict:
    """Runs ``jaxnets train``: fit, print each epoch, report the test metrics.

    GAN parts train as a generator/discriminator pair (`jaxnets.gan_runner`).
    """
    if recipes.gan_pair(args.model):
        from jaxnets import gan_runner

        return gan_runner.train(args)
    config = run_config(args)
    if args.epochs <= 0 or args.batch_size <= 0:
        raise ConfigError("--epochs and --batch-size must be positive integers.")
    if getattr(args, "no_compile_cache", False):
        compile_lib.disable_cache()
    compile_lib.ensure_default_cache()  # before initialization, so its programs are cached too
    # Devices, engine and multi-process start-up (before any other JAX work).
    run = parallel_run.start(args, config)
    workdir = Path(args.workdir) if args.workdir else None
    if workdir is not None:
        check_same_run(workdir, config)
    dataset = load_dataset(config)
    train_data = run.shard((dataset.x_train, dataset.y_train))  # this process's rows
    batch_size = run.batch_size(args.batch_size)  # ... and its share of each batch
    steps = args.epochs * -(-len(train_data["x"]) // batch_size)
    state = make_state(config, dataset, steps)
    if workdir is not None and run.is_main:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "config.json").write_text(json.dumps(config, indent=1))
    n_params = sum(x.size for x in jax.tree.leaves(state.params))
    run.print(
        f"jaxnets train: model={args.model} ({n_params:,} parameters) dataset={config['dataset']} "
        f"({len(dataset.x_train)} train / {len(dataset.x_test)} test) on {run.describe()}"
    )
    start = time.perf_counter()
    state, history = fit(
        state,
        train_data,
        epochs=args.epochs,
        batch_size=batch_size,
        validation_data=run.shard(_validation(dataset)),
        seed=args.seed,
        verbose=run.verbose(args.verbose),
        fuse=getattr(args, "fuse", None),  # fit prints the pre-flight report at verbose >= 1
        engine=run.engine,
        workdir=workdir,
        save_every=config["save_every"],
    )
    seconds = time.perf_counter() - start
    test_data = run.shard((dataset.x_test, dataset.y_test))
    test = evaluate(state, test_data, batch_size=256, engine=run.engine)
    summary = " - ".join(f"{k}: {v:.4f}" for k, v in test.items() if isinstance(v, float))
    run.print(f"test: {summary} ({seconds:.1f}s training)")
    if "accuracy" in test:
        run.print(f"final test accuracy: {test['accuracy']:.4f}")
    if workdir is not None and run.is_main:
        write_history(workdir, history)
        (workdir / "test_metrics.json").write_text(
            json.dumps({k: v for k, v in test.items() if isinstance(v, float)}, indent=1)
        )
        print(f"wrote {workdir}/config.json, history.json, history.csv, checkpoints/")
    return test


def evaluate_workdir(workdir: str, batch_size: int = 256) -> dict:
    """Runs ``jaxnets evaluate``: rebuild the run's model, restore weights, evaluate."""
    path = Path(workdir)
    if not (path / "config.json").exists():
        raise ConfigError(
            f"{path} holds no config.json; point --workdir at a folder written by "
            "`jaxnets train --workdir`."
        )
    config = json.loads((path / "config.json").read_text())
    if recipes.gan_pair(config["model"]):
        from jaxnets import gan_runner

        return gan_runner.evaluate_workdir(path, config)
    dataset = load_dataset(config)
    target = make_state(config, dataset, total_steps=1)
    if (path / "checkpoints").is_dir():
        from jaxnets.checkpoint import restore_state

        state = restore_state(path / "checkpoints", target)
    else:
        state = restore_weights(path / "weights", target)
    test = evaluate(state, (dataset.x_test, dataset.y_test), batch_size=batch_size)
    print(" - ".join(f"{k}: {v:.4f}" for k, v in test.items() if isinstance(v, float)))
    return test


def list_models():
    """Prints the zoo: name, task, example input, parameter count, default dataset."""
    from jaxnets import models as models_lib

    print(
        f"{'model':<22}{'task':<13}{'input (per example)':<22}{'parameters':>12}  default dataset"
    )
    for name in models_lib.names():
        module = models_lib.get(name)
        x = models_lib.example_input(name, batch_size=1)
        shapes = jax.eval_shape(lambda x, m=module: m.init(jax.random.key(0), x), x)
        n = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(shapes.get("params", {})))
        shape = f"{tuple(x.shape[1:])} {x.dtype}"
        label = recipes.default_dataset_label(name)
        print(f"{name:<22}{module.task:<13}{shape:<22}{n:>12,}  {label}")


def list_datasets():
    for name in data_lib.names():
        print(name)
