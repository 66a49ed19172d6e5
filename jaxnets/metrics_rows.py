"""Class scores and labels as rows: the input every class metric reads.

A class metric's ``update`` takes scores `(B, ..., C)` and integer labels
`(B, ...)`; `_label_rows` flattens them to one row per label, with its
example's weight. Both `jaxnets.metrics` and `jaxnets.metrics_classification`
use it, so it lives here, below both.
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxnets.errors import ShapeError


def _label_rows(preds, labels, weights):
    """Scores `(B, ..., C)` and labels `(B, ...)` as rows `(N, C)` and `(N,)` with weights `(N,)`.

    A multi-label binary classifier has one label per output, `(B, K)`: each
    counts as a row with its example's weight, as Keras's ``binary_accuracy``
    and ``Precision`` count every label; so does each pixel of a segmentation
    map `(B, H, W)`. Labels `(B, 1)` become `(B,)`: compared as they are with
    `(B,)` arg-maxes, they would broadcast to a `(B, B)` table. Shapes are
    static, so the check runs once, while tracing.
    """
    num_classes = preds.shape[-1]
    if preds.size // max(num_classes, 1) != labels.size:
        raise ShapeError(
            f"a metric got scores of shape {tuple(preds.shape)} (one row of {num_classes} per "
            f"label) and labels of shape {tuple(labels.shape)}; it needs one integer label per "
            f"row, shape {tuple(preds.shape[:-1])}."
        )
    if labels.ndim == 1 and preds.ndim == 2:
        return preds, labels, weights
    per_example = labels.size // weights.shape[0]
    w = jnp.repeat(weights, per_example)
    return preds.reshape(-1, num_classes), labels.reshape(-1), w
