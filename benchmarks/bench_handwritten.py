"""The floor: a hand-written Flax + Optax loop (jit, donated state, a host sync every 10 steps).

It trains the same Flax modules as jaxnets with ``optax.adam`` and
``optax.softmax_cross_entropy_with_integer_labels``, computing loss and
accuracy each step like a Flax example. ``hand`` gathers each batch on the host
(``x[idx]``, numpy) as the Flax examples do; ``hand-dev`` keeps the dataset on
the device and gathers inside the jitted step; ``hand-scan`` runs the epoch as
one ``lax.scan`` of that step over the device-resident dataset (one dispatch per
epoch, every step's metrics returned), the floor for `fit(fuse="epoch")`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.common import LEARNING_RATE, Contender, Spec, jaxnets_module


def _step_fn(module, tx):
    def step(state, xb, yb):
        def loss_fn(params):
            logits = module.apply({"params": params}, xb, train=True)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()
            return loss, logits

        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        updates, opt = tx.update(grads, state["opt"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        accuracy = jnp.mean(jnp.argmax(logits, -1) == yb)
        return {"params": params, "opt": opt}, {"loss": loss, "accuracy": accuracy}

    return step


def contenders(spec: Spec, x: np.ndarray, y: np.ndarray) -> list[Contender]:
    module, tx = jaxnets_module(spec.name), optax.adam(LEARNING_RATE)
    step = _step_fn(module, tx)
    host_step = jax.jit(step, donate_argnums=0)

    @functools.partial(jax.jit, donate_argnums=0)
    def device_step(state, xs, ys, idx):
        return step(state, xs[idx], ys[idx])

    steps, b = len(x) // spec.batch, spec.batch
    box = {"epoch": 0}

    @functools.partial(jax.jit, donate_argnums=0)
    def scan_epoch(state, xs, ys, order):
        def body(state, idx):
            return step(state, xs[idx], ys[idx])  # every step's loss and accuracy come back

        return jax.lax.scan(body, state, order.reshape(steps, b))

    def init():
        params = module.init(jax.random.key(0), x[:1], train=False)["params"]
        return {"params": params, "opt": tx.init(params)}

    def run_host():
        perm = np.random.default_rng([0, box["epoch"]]).permutation(len(x))
        box["epoch"] += 1
        state = box["host"]
        for i in range(steps):
            idx = perm[i * b : (i + 1) * b]
            state, metrics = host_step(state, x[idx], y[idx])
            if (i + 1) % 10 == 0:
                float(metrics["loss"])  # the host sync
        jax.block_until_ready(state)
        box["host"] = state
        return steps

    def run_device():
        perm = np.random.default_rng([0, box["epoch"]]).permutation(len(x)).astype(np.int32)
        box["epoch"] += 1
        state, xs, ys = box["dev"], box["xs"], box["ys"]
        for i in range(steps):
            state, metrics = device_step(state, xs, ys, perm[i * b : (i + 1) * b])
            if (i + 1) % 10 == 0:
                float(metrics["loss"])
        jax.block_until_ready(state)
        box["dev"] = state
        return steps

    def run_scan():
        perm = np.random.default_rng([0, box["epoch"]]).permutation(len(x)).astype(np.int32)
        box["epoch"] += 1
        box["scan"], metrics = scan_epoch(box["scan"], box["xs"], box["ys"], perm[: steps * b])
        float(metrics["loss"][-1])  # the host sync
        jax.block_until_ready(box["scan"])
        return steps

    def setup_host():
        box["host"] = init()
        run_host()

    def setup_device():
        box["dev"], box["xs"], box["ys"] = init(), jax.device_put(x), jax.device_put(y)
        run_device()

    def setup_scan():
        box["scan"], box["xs"], box["ys"] = init(), jax.device_put(x), jax.device_put(y)
        run_scan()

    return [
        Contender("hand", setup_host, run_host),
        Contender("hand-dev", setup_device, run_device),
        Contender("hand-scan", setup_scan, run_scan),
    ]
