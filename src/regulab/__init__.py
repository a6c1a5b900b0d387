"""regulab: regularization in deep learning, done correctly."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("regulab")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

from regulab.augment import cutout, gaussian_noise, hflip, random_crop
from regulab.constraints import max_norm_
from regulab.data import (
    TensorLoader,
    digits,
    fashion_mnist,
    mnist,
    synthetic_linear,
    train_val_split,
)
from regulab.early_stopping import EarlyStopping
from regulab.groups import describe_groups, param_groups
from regulab.layers import DropBlock2d, Dropout, DropPath, drop_block2d, drop_path, dropout
from regulab.linear_regression import FitResult, TrainingDiverged, train_concise, train_scratch
from regulab.normalization import BatchNorm, batch_norm
from regulab.penalties import (
    Penalty,
    decoupled_weight_decay_,
    elastic_net_penalty,
    group_lasso_penalty,
    l1_penalty,
    l2_penalty,
    prox_l1_,
)
from regulab.ridge import ridge, ridge_path
from regulab.schedules import cosine, exponential, inverse_sqrt, inverse_time, lambda_lr, step
from regulab.sweep import LambdaSearch, fit_sweep
from regulab.train import History, fit

__all__ = [
    "BatchNorm",
    "DropBlock2d",
    "DropPath",
    "Dropout",
    "EarlyStopping",
    "FitResult",
    "History",
    "LambdaSearch",
    "Penalty",
    "TensorLoader",
    "TrainingDiverged",
    "__version__",
    "batch_norm",
    "cosine",
    "cutout",
    "decoupled_weight_decay_",
    "describe_groups",
    "digits",
    "drop_block2d",
    "drop_path",
    "dropout",
    "elastic_net_penalty",
    "exponential",
    "fashion_mnist",
    "fit",
    "fit_sweep",
    "gaussian_noise",
    "group_lasso_penalty",
    "hflip",
    "inverse_sqrt",
    "inverse_time",
    "l1_penalty",
    "l2_penalty",
    "lambda_lr",
    "max_norm_",
    "mnist",
    "param_groups",
    "prox_l1_",
    "random_crop",
    "ridge",
    "ridge_path",
    "step",
    "synthetic_linear",
    "train_concise",
    "train_scratch",
    "train_val_split",
]
