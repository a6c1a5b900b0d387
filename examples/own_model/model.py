"""A small CNN of your own for 8x8 images: what `model.factory = "model:make"` builds.

Two conv-BatchNorm-ReLU blocks (BatchNorm is what `regulab slim` prunes by), dropout,
and a linear classifier. Nothing here knows about regulab.
"""

from torch import nn


def make(width: int = 16, classes: int = 10, dropout: float = 0.1) -> nn.Module:
    """conv(1->width) BN ReLU, conv(width->2 width) BN ReLU, pool, dropout, linear."""
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, padding=1, bias=False),
        nn.BatchNorm2d(2 * width),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(8 * width, classes),
    )
