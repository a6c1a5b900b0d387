"""Data augmentation on batched image tensors (N, C, H, W), on any device.

Every function draws its randomness for the whole batch at once (no Python loop
over examples) from `generator` when given, so a seeded generator reproduces the
same augmented batch. Draws happen on the generator's device and are moved to
the batch's device, so one CPU generator serves CPU and GPU batches alike.

* `random_crop`: zero-pad by `pad` pixels, then crop back to H x W at a random
  offset per example (the CIFAR recipe of He et al., arXiv:1512.03385).
* `hflip`: mirror left-right with probability p per example.
* `gaussian_noise`: add N(0, std^2) noise to every element.
* `cutout`: zero a size x size square at a random centre per example, clipped at
  the border (DeVries & Taylor, arXiv:1708.04552).
"""

import torch
from torch.nn import functional as F

from regulab import _checks


def _check_images(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a batch of images (N, C, H, W); got {shape}")


def _device(x: torch.Tensor, generator) -> torch.device:
    """Where to draw: on the generator's device when one is given, else on x's."""
    if generator is None:
        return x.device
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None; got {generator!r}")
    return generator.device


def _randint(high: int, n: int, x: torch.Tensor, generator) -> torch.Tensor:
    """n integers uniform in [0, high), on x's device."""
    device = _device(x, generator)
    return torch.randint(high, (n,), generator=generator, device=device).to(x.device)


def random_crop(x: torch.Tensor, pad: int, *, generator=None) -> torch.Tensor:
    """Pad each side with `pad` zeros, then take an H x W crop at a random offset per example."""
    _check_images(x)
    pad = _checks.non_negative_int("pad", pad)
    if pad == 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = _randint(2 * pad + 1, n, x, generator)
    dx = _randint(2 * pad + 1, n, x, generator)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # (N, 1, H, 1)
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # (N, 1, 1, W)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channel = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, channel, rows, cols]


def hflip(x: torch.Tensor, p: float = 0.5, *, generator=None) -> torch.Tensor:
    """Mirror each example left-right (last dimension) with probability p."""
    _check_images(x)
    p = _checks.probability("p", p)
    device = _device(x, generator)
    flip = (torch.rand(x.shape[0], generator=generator, device=device) < p).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def gaussian_noise(x: torch.Tensor, std: float, *, generator=None) -> torch.Tensor:
    """Add independent N(0, std^2) noise to every element."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        got = f"dtype {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a floating-point tensor; got {got}")
    std = _checks.non_negative("std", std)
    if std == 0:
        return x
    device = _device(x, generator)
    noise = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype)
    return x + std * noise.to(x.device)


def cutout(x: torch.Tensor, size: int, *, generator=None) -> torch.Tensor:
    """Zero a size x size square per example; its centre is uniform over the image.

    The square covers rows cy - size // 2 .. cy - size // 2 + size - 1 (and the same
    for columns), clipped at the border, so squares near an edge are partly outside.
    """
    _check_images(x)
    size = _checks.positive_int("size", size)
    n, _, h, w = x.shape
    cy = _randint(h, n, x, generator)
    cx = _randint(w, n, x, generator)
    top, left = cy - size // 2, cx - size // 2
    r = torch.arange(h, device=x.device)[None, :]
    c = torch.arange(w, device=x.device)[None, :]
    in_rows = (r >= top[:, None]) & (r < top[:, None] + size)  # (N, H)
    in_cols = (c >= left[:, None]) & (c < left[:, None] + size)  # (N, W)
    hole = in_rows[:, None, :, None] & in_cols[:, None, None, :]  # (N, 1, H, W)
    return x.masked_fill(hole, 0)


AUGMENTATIONS = {
    "random_crop": random_crop,
    "hflip": hflip,
    "gaussian_noise": gaussian_noise,
    "cutout": cutout,
}
