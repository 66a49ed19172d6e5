"""Character-level language models on Jane Austen: LSTM and GPT against Kneser-Ney n-grams.

The six novels (``jaxnets.data.load("austen", seq_len=None)``, 4.0 M characters,
81 symbols); the last 10% is held out. Every number is the mean negative
log-likelihood in nats per character on the held-out text:

* n-gram baselines: interpolated Kneser-Ney of orders 3 and 5 (`ngram.py`), fitted on
  the training 90% and scored on the very characters the networks predict;
* ``lstm``: the zoo's ``RecurrentClassifier`` (embedding 64, one LSTM layer, per-step
  logits); ``gpt``: the zoo's ``GPT`` (pre-LN causal transformer, tied embedding).
  Both train with the pure ``jaxnets.training.train_step`` (jit-compiled here) on
  random windows of the training text, AdamW with warm-up and cosine decay, for a
  fixed number of steps (a few CPU minutes). The held-out text is cut into
  non-overlapping windows of ``--seq-len`` characters; each window starts without
  context, which costs the networks a little against the n-grams, whose context
  runs on across window borders.

Samples come from the zoo's jit-compiled ``jaxnets.models.generate``.

Usage:
  JAXNETS_DATA=/path/with/janeaustenr python experiments/charlm/run.py [--quick] [--steps 1500]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import common  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
from ngram import KneserNey  # noqa: E402

from jaxnets import models  # noqa: E402
from jaxnets.training import create_train_state, evaluate, train_step  # noqa: E402

PROMPT = "It is a truth universally acknowledged"


class LSTMLM(models.RecurrentClassifier):
    """The zoo's recurrent model plus the ``block_size`` that `generate` reads (its context)."""

    block_size: int = 128


def build(name: str, vocab: int, args):
    if name == "lstm":
        return LSTMLM(
            cell="lstm", vocab_size=vocab, embed_dim=64, hidden_size=args.lstm_hidden,
            return_sequences=True, num_classes=vocab, input_shape=(args.seq_len,),
            block_size=args.seq_len,
        )  # fmt: skip
    return models.get(
        "gpt_char", vocab_size=vocab, block_size=args.seq_len, num_layers=args.gpt_layers,
        d_model=args.gpt_width, num_heads=4,
    )  # fmt: skip


def windows(tokens: np.ndarray, length: int, limit: int | None = None):
    """Non-overlapping ``(x, y)`` windows with next-character targets."""
    n = (len(tokens) - 1) // length
    n = n if limit is None else min(n, max(1, limit // length))
    x = tokens[: n * length].reshape(n, length)
    y = tokens[1 : n * length + 1].reshape(n, length)
    return x, y


def train(name, module, train_tokens, val, args, seed):
    """A fixed number of steps on random windows; validation loss every ``--eval-every``."""
    steps = args.steps
    state = create_train_state(
        module, "adamw", train_tokens[None, : args.seq_len], learning_rate=args.lr[name],
        schedule="warmup_cosine", total_steps=steps, weight_decay=0.01, clipnorm=1.0,
        metrics=(), seed=seed,
    )  # fmt: skip
    step_fn = jax.jit(train_step, donate_argnums=0)
    rng = np.random.default_rng(seed)
    offsets = np.arange(args.seq_len)
    history = {"step": [], "loss": [], "val_loss": [], "seconds": []}
    timer, pending = common.Timer(), []
    for i in range(steps):
        starts = rng.integers(0, len(train_tokens) - args.seq_len - 1, args.batch)
        idx = starts[:, None] + offsets
        batch = {"x": train_tokens[idx], "y": train_tokens[idx + 1], "mask": np.ones(args.batch)}
        state, sums = step_fn(state, batch)
        pending.append(sums["loss"])
        if (i + 1) % args.eval_every == 0 or i + 1 == steps:
            got = jax.device_get(pending)
            history["step"].append(i + 1)
            history["loss"].append(float(np.mean([s["total"] / s["count"] for s in got])))
            history["val_loss"].append(evaluate(state, val, batch_size=128)["loss"])
            history["seconds"].append(timer())
            pending = []
            print(
                f"  {name} step {i + 1}: train {history['loss'][-1]:.3f} "
                f"val {history['val_loss'][-1]:.3f} nats/char ({timer()} s)"
            )
    return state, history


def main():
    p = common.parser(__doc__.splitlines()[0], seeds=(0,))
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--val-chars", type=int, default=32_768, help="held-out chars for curves")
    p.add_argument("--lstm-hidden", type=int, default=256)
    p.add_argument("--gpt-layers", type=int, default=2)
    p.add_argument("--gpt-width", type=int, default=96)
    p.add_argument("--models", nargs="+", default=["lstm", "gpt"], choices=["lstm", "gpt"])
    args = p.parse_args()
    args.lr = {"lstm": 3e-3, "gpt": 2e-3}
    heldout_limit = None
    if args.quick:
        args.steps, args.eval_every, args.seq_len, args.val_chars = 4, 2, 32, 2048
        args.lstm_hidden, args.gpt_layers, args.gpt_width = 32, 1, 32
        heldout_limit = 8192
    out = common.out_dir(args, __file__)
    total = common.Timer()
    ds = common.load("austen", seq_len=None)
    tr = np.append(ds.x_train, ds.y_train[-1]).astype(np.int32)  # the training text
    if args.quick:
        tr = tr[-200_000:]  # the end of the training text, so the held-out text follows it
    te = np.append(ds.x_test, ds.y_test[-1]).astype(np.int32)  # the held-out 10%
    vocab = ds.num_classes
    heldout = windows(te, args.seq_len, heldout_limit)
    scored = heldout[1].size  # characters the networks predict: te[1 : scored + 1]
    results = {
        "machine": common.machine(),
        "train_chars": len(tr),
        "heldout_chars": len(te),
        "scored_chars": scored,
        "vocab_size": vocab,
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "quick")},
        "baselines": {},
        "models": {},
    }
    stream = np.concatenate([tr, te]).astype(np.int64)
    for order in (3, 5):
        timer = common.Timer()
        kn = KneserNey(tr, order=order, vocab_size=vocab)
        nll = kn.nll(stream[: len(tr) + 1 + scored], start=len(tr) + 1)
        results["baselines"][f"kneser_ney_{order}gram"] = {"nats_per_char": nll, "seconds": timer()}
        print(f"Kneser-Ney {order}-gram: {nll:.4f} nats/char ({timer()} s)")
    counts = np.bincount(tr, minlength=vocab) + 1
    unigram = -np.log(counts / counts.sum())[te[1 : scored + 1]].mean()
    results["baselines"]["unigram"] = {"nats_per_char": unigram}
    val = windows(te, args.seq_len, args.val_chars)
    curves, samples = {}, {}
    for name in args.models:
        seed = args.seeds[0]
        timer = common.Timer()
        module = build(name, vocab, args)
        state, hist = train(name, module, tr, val, args, seed)
        train_seconds = timer()
        nll = evaluate(state, heldout, batch_size=128)["loss"]
        prompt = np.array([ds.class_names.index(c) for c in PROMPT], np.int32)
        tokens = models.generate(
            module, state.params, prompt, jax.random.key(seed), max_new_tokens=300,
            temperature=0.8,
        )  # fmt: skip
        text = "".join(ds.class_names[int(t)] for t in tokens)
        samples[name] = text
        results["models"][name] = {
            "nats_per_char": nll,
            "params": int(sum(x.size for x in jax.tree.leaves(state.params))),
            "train_seconds": train_seconds,
            "seconds": timer(),
            "chars_seen": args.steps * args.batch * args.seq_len,
            "sample": text,
        }
        curves[name] = hist
        print(f"{name}: {nll:.4f} nats/char on the held-out text ({timer()} s)\n{text}\n")
    results["curves"] = curves
    results["seconds"] = total()
    common.save_json(results, out / "results.json")
    (out / "samples.txt").write_text(
        "".join(f"== {name} (temperature 0.8) ==\n{text}\n\n" for name, text in samples.items())
    )
    plot_curves(curves, results["baselines"], out / "curves.png")
    print(f"total {results['seconds']} s; wrote {out}")


def plot_curves(curves, baselines, path):
    plt = common.pyplot()

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, h in curves.items():
        ax.plot(h["step"], h["loss"], "--", label=f"{name} train")
        ax.plot(h["step"], h["val_loss"], label=f"{name} held-out")
    for name, b in baselines.items():
        if name != "unigram":
            ax.axhline(b["nats_per_char"], color="gray", lw=0.8, ls=":")
            ax.text(0, b["nats_per_char"], name, fontsize=7, va="bottom")
    ax.set_xlabel("step")
    ax.set_ylabel("nats / character")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    main()
