"""regulab: regularization in deep learning, done correctly."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("regulab")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

from regulab.data import synthetic_linear
from regulab.linear_regression import FitResult, TrainingDiverged, train_concise, train_scratch

__all__ = [
    "FitResult",
    "TrainingDiverged",
    "__version__",
    "synthetic_linear",
    "train_concise",
    "train_scratch",
]
