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
from jaxnets import executable_store, recipes
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


def split_arrays(dataset, split: str) -> dict | None:
    """One split's batch dict (``x``, ``y`` and the step mask ``x_mask`` of padded
    variable-length sequences, which masked models read); None for a missing
    validation split."""
    if split == "val" and dataset.x_val is None:
        return None
    return dataset.arrays(split)


def write_history(workdir: Path, history: dict):
    scalars = {k: v for k, v in history.items() if all(isinstance(x, float) for x in v)}
    (workdir / "history.json").write_text(json.dumps(scalars, indent=1))
    with open(workdir / "history.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", *scalars])
        for i, row in enumerate(zip(*scalars.values(), strict=True)):
            writer.writerow([i, *row])


# What `evaluate_workdir` needs from a config.json to rebuild the run.
_REQUIRED = ("model", "dataset", "optimizer", "lr", "seed")


def read_config(workdir: Path, required: tuple[str, ...] = _REQUIRED) -> dict:
    """The run configuration in ``<workdir>/config.json``, or a `ConfigError` saying what
    is wrong with the file (missing, not JSON, not a JSON object, ``required`` keys absent)."""
    path = Path(workdir) / "config.json"
    if not path.is_file():
        raise ConfigError(
            f"{path.parent} holds no config.json; point --workdir at a folder written by "
            "`jaxnets train --workdir`."
        )
    try:
        config = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(
            f"{path} is not valid JSON ({err}): damaged, or not written by `jaxnets train "
            "--workdir`. Delete the folder to start over, or use a new --workdir."
        ) from None
    if not isinstance(config, dict):
        raise ConfigError(
            f"{path} is not a jaxnets run configuration (a JSON object); point --workdir at "
            "a folder written by `jaxnets train --workdir`."
        )
    missing = [k for k in required if k not in config]
    if missing:
        raise ConfigError(
            f"{path} is not a jaxnets run configuration: it lacks {', '.join(missing)}. "
            "Point --workdir at a folder written by `jaxnets train --workdir`."
        )
    return config


def make_workdir(workdir: Path) -> None:
    """Creates ``workdir`` (and its parents), or says in a `ConfigError` why it cannot."""
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        what = "is a file, not a folder" if workdir.is_file() else f"cannot be created ({err})"
        raise ConfigError(f"--workdir {workdir} {what}; pass a folder path.") from None


def write_config(workdir: Path, config: dict) -> None:
    """Writes ``config.json`` whole or not at all (a killed run leaves no half file)."""
    path = workdir / "config.json"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(config, indent=1))
    tmp.replace(path)


def check_same_run(workdir: Path, config: dict) -> dict | None:
    """Raises `ConfigError` if ``workdir`` holds a run with another config (epochs may grow).

    Returns the saved configuration, or None for a new run.
    """
    path = workdir / "config.json"
    if not path.exists():
        return None
    old = read_config(workdir, required=())  # any key may differ: each one is reported
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
    return old


def _note_stretched_schedule(old: dict | None, config: dict, run) -> None:
    """Says when a resumed run's learning-rate schedule no longer matches its first part.

    Every schedule but ``constant`` spans the run's total steps, so after ``--epochs``
    changes, the resumed steps follow the schedule of the new length while the steps
    already taken followed the old one: the result differs from a fresh run.
    """
    if old is None or config.get("schedule") in (None, "constant"):
        return
    old_epochs = old.get("epochs")
    if old_epochs != config["epochs"]:
        run.print(
            f"note: --schedule {config['schedule']} now spans {config['epochs']} epochs; the "
            f"epochs already trained followed its {old_epochs}-epoch version, so this run will "
            f"not match a fresh {config['epochs']}-epoch run (a constant rate would)."
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
        # Canonical, so that "Digits" resumes (and is configured as) "digits".
        "dataset": data_lib.canonical_name(args.dataset or recipes.default_dataset(args.model)),
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
    if getattr(args, "fuse", None) == "run" and args.workdir:
        # Said before any data is loaded or config.json is written.
        raise ConfigError(
            "--fuse run compiles the whole run into one program, which cannot checkpoint "
            "into --workdir or resume from it; use --fuse epoch with --workdir."
        )
    if getattr(args, "no_compile_cache", False):
        compile_lib.disable_cache()
    compile_lib.ensure_default_cache()  # before initialization, so its programs are cached too
    # Devices, engine and multi-process start-up (before any other JAX work).
    run = parallel_run.start(args, config)
    workdir = Path(args.workdir) if args.workdir else None
    if workdir is not None:
        _note_stretched_schedule(check_same_run(workdir, config), config, run)
    dataset = load_dataset(config)
    # A second run of the same command loads its programs instead of tracing them again.
    with executable_store.use(executable_store.for_run(run_context(args, dataset))):
        return _train_and_test(args, config, run, dataset, workdir)


def run_context(args, dataset) -> dict:
    """What a command-line run's programs depend on beyond the environment and their
    arguments (`jaxnets.executable_store`): the command's options and the data's shapes."""
    plain = str | int | float | bool | tuple | None
    # Not --workdir: where results are written changes no program.
    options = {k: v for k, v in vars(args).items() if isinstance(v, plain) and k != "workdir"}
    data = {
        k: (list(v.shape), str(v.dtype)) if hasattr(v, "shape") else v
        for k, v in vars(dataset).items()
        if hasattr(v, "shape") or isinstance(v, plain)  # not class_names: labels change no program
    }
    return {"options": options, "data": data}


def _train_and_test(args, config: dict, run, dataset, workdir: Path | None) -> dict:
    train_data = run.shard(split_arrays(dataset, "train"))  # this process's rows
    batch_size = run.batch_size(args.batch_size)  # ... and its share of each batch
    steps = args.epochs * -(-len(train_data["x"]) // batch_size)
    state = make_state(config, dataset, steps)
    if workdir is not None and run.is_main:
        make_workdir(workdir)
        write_config(workdir, config)
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
        validation_data=run.shard(split_arrays(dataset, "val")),
        seed=args.seed,
        verbose=run.verbose(args.verbose),
        fuse=getattr(args, "fuse", None),  # fit prints the pre-flight report at verbose >= 1
        engine=run.engine,
        workdir=workdir,
        save_every=config["save_every"],
    )
    seconds = time.perf_counter() - start
    test_data = run.shard(split_arrays(dataset, "test"))
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
        print(
            f"wrote {workdir}/config.json, history.json, history.csv, test_metrics.json, "
            "checkpoints/"
        )
    return test


def evaluate_workdir(workdir: str, batch_size: int = 256) -> dict:
    """Runs ``jaxnets evaluate``: rebuild the run's model, restore weights, evaluate."""
    path = Path(workdir)
    config = read_config(path)
    if recipes.gan_pair(config["model"]):
        from jaxnets import gan_runner

        return gan_runner.evaluate_workdir(path, config)
    dataset = load_dataset(config)
    target = make_state(config, dataset, total_steps=1)
    if (path / "checkpoints").is_dir():
        from jaxnets.checkpoint import restore_state

        state = restore_state(path / "checkpoints", target)
    elif (path / "weights").is_dir():
        state = restore_weights(path / "weights", target)
    else:
        raise ConfigError(
            f"{path} holds no checkpoint yet (no checkpoints/ folder): the run stopped before "
            "its first save. Run the same `jaxnets train --workdir` command to resume it."
        )
    test = evaluate(state, split_arrays(dataset, "test"), batch_size=batch_size)
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
