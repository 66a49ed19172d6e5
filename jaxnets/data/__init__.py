"""Datasets, file readers, batching, preprocessing and augmentation.

Example:
  >>> from jaxnets import data
  >>> ds = data.load("digits")
  >>> batch = next(data.iterate_batches(ds.arrays("train"), 32, shuffle_seed=0))
  >>> batch["x"].shape, batch["y"].shape, batch["mask"].shape
  ((32, 64), (32,), (32,))
"""

from jaxnets.data import (
    austen,
    mnist1d_source,
    pairs,
    segmentation,
    sources_idx,
    sources_mlxtend,
    sources_sklearn,
    synthetic,
    ucr,
)
from jaxnets.data.augment import augment_images, random_crop, random_flip, random_shift
from jaxnets.data.austen import load_austen_texts, read_lazyload
from jaxnets.data.batching import (
    bucket_by_length,
    epoch_order,
    iterate_batches,
    iterate_bucketed,
    num_batches,
    pad_to,
)
from jaxnets.data.datasets import Dataset, cache_dir, canonical_name, load, names, register
from jaxnets.data.idx import read_idx, write_idx
from jaxnets.data.preprocessing import (
    normalize,
    one_hot,
    sequence_windows,
    split_indices,
    standardize,
    train_val_split,
)
from jaxnets.data.synthetic import blobs
from jaxnets.data.ucr import TsData, fetch_sktime_wheel, load_ucr, parse_ts, read_ts
from jaxnets.data.wheels import fetch_wheel, find_wheels

__all__ = [
    "Dataset",
    "TsData",
    "augment_images",
    "austen",
    "blobs",
    "bucket_by_length",
    "cache_dir",
    "canonical_name",
    "epoch_order",
    "fetch_sktime_wheel",
    "fetch_wheel",
    "find_wheels",
    "iterate_batches",
    "iterate_bucketed",
    "load",
    "load_austen_texts",
    "load_ucr",
    "mnist1d_source",
    "names",
    "normalize",
    "num_batches",
    "one_hot",
    "pad_to",
    "pairs",
    "parse_ts",
    "random_crop",
    "random_flip",
    "random_shift",
    "read_idx",
    "read_lazyload",
    "read_ts",
    "register",
    "segmentation",
    "sequence_windows",
    "sources_idx",
    "sources_mlxtend",
    "sources_sklearn",
    "split_indices",
    "standardize",
    "synthetic",
    "train_val_split",
    "ucr",
    "write_idx",
]
