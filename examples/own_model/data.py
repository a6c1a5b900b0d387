"""Writes data.npz, the example's own data: scikit-learn's 8x8 digits (no download).

    python examples/own_model/data.py

x: float32 (1797, 1, 8, 8), pixels / 16 in [0, 1]; y: int64 (1797,) labels 0..9. The
recipe names them with `data.arrays`; regulab holds out the test and validation parts.
`load` returns the same arrays, for `data.factory = "data:load"`.
"""

from pathlib import Path

import numpy as np


def load() -> dict:
    """{"train": (x, y)}: all 1797 digits; the recipe's fractions hold out test and val."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images[:, None] / 16).astype(np.float32)
    return {"train": (x, digits.target.astype(np.int64))}


if __name__ == "__main__":
    x, y = load()["train"]
    path = Path(__file__).with_name("data.npz")
    np.savez_compressed(path, images=x, labels=y)
    print(f"wrote {path}: images {x.shape} {x.dtype}, labels {y.shape} {y.dtype}")
