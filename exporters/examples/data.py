"""scikit-learn's digits (1,797 8x8 images, shipped inside the package: no download), split once."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SEED = 0
REFERENCE_BATCH = 32


@dataclass(frozen=True)
class Digits:
    x_train: np.ndarray  # (n, 64) float32 in [0, 1]
    y_train: np.ndarray  # (n,) int64
    x_test: np.ndarray
    y_test: np.ndarray

    def images(self, x: np.ndarray, layout: str) -> np.ndarray:
        """Flat (n, 64) rows as NCHW (n, 1, 8, 8) or NHWC (n, 8, 8, 1) images."""
        return x.reshape(-1, 1, 8, 8) if layout == "NCHW" else x.reshape(-1, 8, 8, 1)


def load_digits() -> Digits:
    from sklearn.datasets import load_digits as sk_load
    from sklearn.model_selection import train_test_split

    data = sk_load()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, random_state=SEED, stratify=y
    )
    return Digits(x_train, y_train, x_test, y_test)


def random_images(shape: tuple[int, ...], n: int = REFERENCE_BATCH, seed: int = SEED) -> np.ndarray:
    """Seeded stand-in images for the random-init models (uniform in [0, 1])."""
    return np.random.default_rng(seed).random((n, *shape), dtype=np.float32)
