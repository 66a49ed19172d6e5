"""One process of a multi-process test run (started by `jaxnets.parallel.launch`).

Trains a tiny MLP for 20 steps of a global batch of 16 on fixed data, each
process feeding its `process_shard`, and writes its final parameters to
``<out>/params_<rank>.npz``. Options make it misbehave on purpose:
``--fail-rank R`` raises in process R after start-up, ``--uneven`` gives
process 1 one row more than the others.
"""

import argparse
import sys

import numpy as np

STEPS, GLOBAL_BATCH, FEATURES = 20, 16, 5


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(STEPS * GLOBAL_BATCH, FEATURES)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int32)
    return x, y


def train(x, y, engine, batch_size, verbose=0):
    import flax.linen as nn

    from jaxnets.training import create_train_state, fit

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = False):
            return nn.Dense(2)(nn.relu(nn.Dense(8)(x)))

    state = create_train_state(MLP(), "sgd", x[:1], learning_rate=0.3, seed=0)
    state, _ = fit(
        state, (x, y), batch_size=batch_size, shuffle=False, verbose=verbose, engine=engine
    )
    return state


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--fail-rank", type=int, default=None)
    p.add_argument("--uneven", action="store_true")
    args = p.parse_args(argv)

    from jaxnets import parallel

    rank, count = parallel.initialize()
    import jax

    if args.fail_rank == rank:
        raise RuntimeError(f"process {rank} fails on purpose")
    x, y = data()
    shard = parallel.process_shard((x, y))
    if args.uneven and rank == 1:
        shard = {k: np.concatenate([v, v[:1]]) for k, v in shard.items()}
    engine = parallel.make_engine()
    print(f"process {rank}/{count}: {jax.local_device_count()} local of {jax.device_count()}")
    state = train(shard["x"], shard["y"], engine, parallel.local_batch_size(GLOBAL_BATCH))
    # Metrics are global sums; predictions come back for this process's rows only.
    from jaxnets.training import evaluate, predict

    loss = evaluate(state, shard, batch_size=24, engine=engine)["loss"]
    outputs = predict(state, shard["x"], batch_size=24, engine=engine)
    np.savez(f"{args.out}/eval_{rank}.npz", loss=loss, outputs=outputs, mask=shard["mask"])
    params = jax.tree.map(np.asarray, engine.fetch(state.params))
    flat = {
        "/".join(str(getattr(k, "key", k)) for k in path): v
        for path, v in jax.tree_util.tree_flatten_with_path(params)[0]
    }
    np.savez(f"{args.out}/params_{rank}.npz", **flat)
    print(f"process {rank} done")


if __name__ == "__main__":
    sys.exit(main())
