"""Data sets: synthetic regression data, scikit-learn's digits, Fashion-MNIST and MNIST
from IDX files, a seeded train/validation split and
an in-memory loader."""

from regulab.data.digits import digits
from regulab.data.idx import IdxError, read_idx, write_idx
from regulab.data.loader import TensorLoader
from regulab.data.mnist_files import fashion_mnist, mnist
from regulab.data.split import train_val_split
from regulab.data.synthetic import synthetic_linear

__all__ = [
    "IdxError",
    "TensorLoader",
    "digits",
    "fashion_mnist",
    "mnist",
    "read_idx",
    "synthetic_linear",
    "train_val_split",
    "write_idx",
]
