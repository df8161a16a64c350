"""The demo's data: scikit-learn's bundled 8x8 handwritten digits (no network needed)."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Split:
    """Images (N, 8, 8, 1) scaled to [0, 1] and integer labels (N,)."""

    images: np.ndarray
    labels: np.ndarray


def load_digits_split(seed: int, test_fraction: float = 0.2) -> tuple[Split, Split]:
    """Loads the digits and splits them into a train and a test set, shuffled by ``seed``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[..., None]
    labels = digits.target.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(labels))
    n_test = int(len(labels) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    return Split(images[train], labels[train]), Split(images[test], labels[test])


def batches(split: Split, batch_size: int, seed: int):
    """An endless stream of shuffled training batches."""
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(len(split.labels))
        for start in range(0, len(order) - batch_size + 1, batch_size):
            idx = order[start : start + batch_size]
            yield split.images[idx], split.labels[idx]
