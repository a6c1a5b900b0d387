"""The recipe's regularizers of the targets: label smoothing, mixup and CutMix.

`[train] label_smoothing` trains on `LabelSmoothingCrossEntropy` (Szegedy et al. 2016,
arXiv:1512.00567) and evaluates on plain cross-entropy; `mixup` and `cutmix` are the
Beta(alpha, alpha) of mixup (Zhang et al. 2018, arXiv:1710.09412) and CutMix (Yun et al.
2019, arXiv:1905.04899), applied by `Mixup` as the training batch_fn (both > 0: one of them
per batch, as timm's Mixup). These are the values `regulab tune` searches under the same names.
"""

import torch

from regulab import metrics
from regulab.errors import RecipeError
from regulab.label_smoothing import LabelSmoothingCrossEntropy
from regulab.mixing import Mixup

NAMES = ("label_smoothing", "mixup", "cutmix")


def check(recipe, splits) -> None:
    """Refuse what the targets' regularizers cannot act on, naming the key."""
    t = recipe.train
    used = [n for n in NAMES if getattr(t, n)]
    if used and t.loss != "cross_entropy":
        raise RecipeError(
            f"train.{used[0]} changes the targets of the loss 'cross_entropy'; train.loss is "
            f"{t.loss!r}: set train.{used[0]} = 0 or train.loss = 'cross_entropy'"
        )
    if (t.mixup or t.cutmix) and t.batch_fn:
        raise RecipeError(
            f"train.{'mixup' if t.mixup else 'cutmix'} mixes (x, y) batches and cannot follow "
            f"train.batch_fn {t.batch_fn!r}: mix inside your batch_fn, or leave it out"
        )
    x = splits.train[0]
    if (t.mixup or t.cutmix) and not x.is_floating_point():
        raise RecipeError(f"train.mixup and train.cutmix need floating-point inputs; got {x.dtype}")
    if t.cutmix and x.ndim < 3:
        raise RecipeError(
            f"train.cutmix cuts boxes from images (N, ..., H, W); the inputs have shape "
            f"{tuple(x.shape)}: set train.cutmix = 0"
        )


def training_loss(recipe, loss):
    """The loss `fit` trains with: loss, label-smoothed when train.label_smoothing > 0."""
    s = recipe.train.label_smoothing
    return LabelSmoothingCrossEntropy(s) if s else loss


def mixing(recipe, model, splits):
    """`Mixup(mixup, cutmix)` over the model's outputs per example, or None when both are 0."""
    t = recipe.train
    if not (t.mixup or t.cutmix):
        return None
    x = splits.train[0][:1].to(next(model.parameters(), splits.train[0]).device)
    was = model.training
    model.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            classes = int(metrics.forward(model, x).shape[1])
    finally:
        model.train(was)
    return Mixup(t.mixup, t.cutmix, num_classes=classes)
