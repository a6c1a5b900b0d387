"""regulab: regularization in deep learning, done correctly.

The library's face: it re-exports the public API and nothing else. Names are
imported on first use (PEP 562), so `import regulab` and `regulab --help` stay
light; `from regulab import fit` imports torch then.
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("regulab")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

_EXPORTS = {  # module -> the names it gives the package
    "regulab.augment": ("cutout", "gaussian_noise", "hflip", "random_crop"),
    "regulab.constraints": ("max_norm_",),
    "regulab.data": (
        "TensorLoader",
        "digits",
        "fashion_mnist",
        "mnist",
        "synthetic_linear",
        "train_val_split",
    ),
    "regulab.early_stopping": ("EarlyStopping",),
    "regulab.errors": ("TrainingDiverged",),
    "regulab.groups": ("describe_groups", "param_groups"),
    "regulab.label_smoothing": (
        "LabelSmoothingCrossEntropy",
        "SoftTargetCrossEntropy",
        "label_smoothing_cross_entropy",
        "soft_target_cross_entropy",
    ),
    "regulab.layers": (
        "ChannelDropout",
        "DropBlock2d",
        "DropPath",
        "Dropout",
        "channel_dropout",
        "drop_block2d",
        "drop_path",
        "dropout",
    ),
    "regulab.linear_regression": ("FitResult", "train_concise", "train_scratch"),
    "regulab.mixing": ("Mixup", "cutmix", "mixup"),
    "regulab.normalization": ("BatchNorm", "batch_norm"),
    "regulab.penalties": (
        "Penalty",
        "decoupled_weight_decay_",
        "elastic_net_penalty",
        "group_lasso_penalty",
        "l1_penalty",
        "l2_penalty",
        "prox_l1_",
    ),
    "regulab.ridge_regression": ("ridge", "ridge_path"),
    "regulab.schedules": (
        "cosine",
        "exponential",
        "inverse_sqrt",
        "inverse_time",
        "lambda_lr",
        "step",
    ),
    "regulab.sweep": ("LambdaSearch", "fit_sweep"),
    "regulab.train": ("History", "fit"),
    "regulab.tune": ("Tuner",),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = ["__version__", *sorted(_WHERE)]


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(import_module(_WHERE[name]), name)
        globals()[name] = value  # once imported, a plain attribute
        return value
    raise AttributeError(f"module 'regulab' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_WHERE])
