"""Random regularization layers, each a pure function plus a thin module.

* `dropout` / `Dropout`: inverted dropout (Srivastava et al., JMLR 2014): in
  training each element is zeroed with probability p and the survivors are
  scaled by 1 / (1 - p), so the expectation is unchanged and evaluation is the
  identity. `p` may be a tensor (broadcast against the input), so that models
  trained together in one vectorized sweep can each have their own rate.
* `channel_dropout` / `ChannelDropout`: `nn.Dropout1d/2d/3d` with a tensor p
  (Tompson et al., arXiv:1411.4280): whole channels of each example zeroed.
* `drop_block2d` / `DropBlock2d`: DropBlock (Ghiasi, Lin & Le, arXiv:1810.12890)
  zeroes contiguous block_size x block_size squares of feature maps.
* `drop_path` / `DropPath`: stochastic depth (Huang et al., arXiv:1603.09382)
  zeroes a residual branch for whole examples.

All of them are the identity when `training` is False (the module's `eval()`).
Randomness comes from torch's global generator or from `generator`.
"""

import torch
from torch import nn
from torch.nn import functional as F

from regulab import _checks


def _draw_dtype(like: torch.Tensor) -> torch.dtype:
    """Random numbers are drawn in at least float32: in float16 or bfloat16 the uniform
    draws are too coarse, and comparing them with p would drop the wrong fraction."""
    return torch.promote_types(like.dtype, torch.float32)


def _rand(shape, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Uniform [0, 1) numbers of `shape`, on like's device, in at least float32."""
    dtype = _draw_dtype(like)
    if generator is None:
        return torch.rand(shape, device=like.device, dtype=dtype)
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None; got {generator!r}")
    return torch.rand(shape, generator=generator, device=generator.device, dtype=dtype).to(
        like.device
    )


def _check_input(x, p) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        got = f"dtype {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a floating-point tensor; got {got}")
    if isinstance(p, torch.Tensor):
        try:
            shape = torch.broadcast_shapes(p.shape, x.shape)
        except RuntimeError:
            shape = None
        if shape != x.shape:
            raise ValueError(
                f"p must be a number or a tensor that broadcasts to x's shape {tuple(x.shape)}; "
                f"got a tensor of shape {tuple(p.shape)}"
            )


def _check_p(p):
    """Validate p (a number or a tensor of numbers) in [0, 1]; return it (floats as float)."""
    if not isinstance(p, torch.Tensor):
        return _checks.probability("p", p)
    # inside torch.func transforms (a vectorized sweep) values cannot be inspected
    if not torch._C._functorch.is_functorch_wrapped_tensor(p):
        if not p.is_floating_point():
            raise ValueError(f"p must be a floating-point tensor; got dtype {p.dtype}")
        if bool(((p < 0) | (p > 1) | p.isnan()).any()):
            raise ValueError(f"p must hold numbers in [0, 1]; got {p.tolist()}")
    return p


def _keep_scale(shape, p, like, generator) -> torch.Tensor | None:
    """1 / (1 - p) where an element is kept (probability 1 - p), 0 where dropped.

    None stands for "keep everything" (float p = 0). The result has like's dtype.
    """
    if isinstance(p, float):
        if p == 0.0:
            return None
        if p == 1.0:
            return torch.zeros(shape, device=like.device, dtype=like.dtype)
        keep = _rand(shape, like, generator) >= p
        return (keep.to(_draw_dtype(like)) / (1 - p)).to(like.dtype)
    p = p.to(like.device, _draw_dtype(like))
    keep = _rand(shape, like, generator) >= p
    # where p = 1 nothing is kept; 1 - p is replaced by 1 there so that no 1 / 0
    # appears, not even in a gradient with respect to p
    return torch.where(keep, 1 / torch.where(p < 1, 1 - p, 1.0), 0.0).to(like.dtype)


def dropout(x: torch.Tensor, p, training: bool = True, *, generator=None) -> torch.Tensor:
    """Inverted dropout: zero each element with probability p, scale the rest by 1 / (1 - p).

    p is a number in [0, 1] or a tensor broadcastable to x (e.g. shape (K, 1, 1)
    for K models stacked along the first dimension). p = 1 returns zeros; in
    evaluation (training=False) x is returned unchanged.
    """
    return _dropout(x, _check_p(p), training, generator)


def _dropout(x, p, training, generator):
    """dropout without checking the values of p (the modules check them once, since
    inspecting a tensor p on every forward would synchronize with the GPU)."""
    _check_input(x, p)
    if not training:
        return x
    scale = _keep_scale(x.shape, p, x, generator)
    return x if scale is None else x * scale


def channel_dropout(
    x: torch.Tensor, p, training: bool = True, *, unbatched: int | None = None, generator=None
) -> torch.Tensor:
    """Channel dropout, as `nn.Dropout1d/2d/3d`: zero each channel of each example (one draw
    per index of dims 0 and 1) with probability p, scale the rest by 1 / (1 - p).

    unbatched: the ndim of one example given without a batch dimension, whose channels
    are then dim 0 (nn.Dropout1d: 2, nn.Dropout3d: 4); None: x is always a batch (as
    nn.Dropout2d). p is a number or a tensor broadcastable to the mask (dims 0 and 1).
    """
    return _channel_dropout(x, _check_p(p), training, unbatched, generator)


def _channel_dropout(x, p, training, unbatched, generator):
    """channel_dropout without checking the values of p; see `_dropout`."""
    if not training:
        return x
    lead = 1 if x.ndim == unbatched else 2  # the dims one draw covers
    mask = x.new_ones(x.shape[:lead] + (1,) * (x.ndim - lead))
    return x * _dropout(mask, p, True, generator)


def drop_path(x: torch.Tensor, p, training: bool = True, *, generator=None) -> torch.Tensor:
    """Stochastic depth: zero whole examples (dim 0) with probability p, scale the rest.

    Apply it to a residual branch, `x + drop_path(branch(x), p, self.training)`.
    p is a number or a tensor: 0-d, or of shape (N,) for one rate per example.
    """
    return _drop_path(x, _check_p(p), training, generator)


def _drop_path(x, p, training, generator):
    """drop_path without checking the values of p; see `_dropout`."""
    if isinstance(x, torch.Tensor) and x.ndim == 0:
        raise ValueError("x must be a batch (N, ...) with examples along dim 0; got a 0-d tensor")
    _check_input(x, p if not isinstance(p, torch.Tensor) or p.ndim != 1 else 0.0)
    if not training:
        return x
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    if isinstance(p, torch.Tensor) and p.ndim == 1:
        if p.shape[0] != x.shape[0]:
            raise ValueError(
                f"p of shape (N,) must have one rate per example, N = {x.shape[0]}; "
                f"got shape {tuple(p.shape)}"
            )
        p = p.view(shape)
    scale = _keep_scale(shape, p, x, generator)
    return x if scale is None else x * scale


def drop_block2d(
    x: torch.Tensor, p: float, block_size: int, training: bool = True, *, generator=None
) -> torch.Tensor:
    """DropBlock on (N, C, H, W) feature maps (Ghiasi et al., arXiv:1810.12890, algorithm 1).

    Block corners are drawn with rate gamma = p * H * W / (bh * bw * (H - bh + 1) * (W - bw + 1)),
    counting only corners whose block fits inside the map, with bh = min(block_size, H)
    and bw = min(block_size, W). Each sample and channel gets its own mask; the
    output is rescaled by (number of elements) / (number kept), as in the paper.
    Overlapping blocks make the dropped fraction somewhat below p for large p.
    block_size = 1 is dropout with a batch-wise rescaling. p may be a 0-d tensor (one
    rate per stacked copy under `torch.func.vmap`); a tensor p always draws, even at 0.
    """
    p = _check_p(p)
    if isinstance(p, torch.Tensor) and p.ndim != 0:
        raise ValueError(f"p must be a number or a 0-d tensor; got shape {tuple(p.shape)}")
    _checks.positive_int("block_size", block_size)
    return _drop_block2d(x, p, block_size, training, generator)


def _drop_block2d(x, p, block_size, training, generator):
    """drop_block2d without checking the values of p; see `_dropout`."""
    _check_input(x, p)
    if x.ndim != 4:
        raise ValueError(
            f"x must be a batch of feature maps (N, C, H, W); got shape {tuple(x.shape)}"
        )
    if not training or (isinstance(p, float) and p == 0.0):
        return x
    n, c, h, w = x.shape
    bh, bw = min(block_size, h), min(block_size, w)
    rate = p * h * w / (bh * bw * (h - bh + 1) * (w - bw + 1))
    if isinstance(p, torch.Tensor):
        gamma = rate.to(x.device, _draw_dtype(x)).clamp(max=1.0)
    else:
        gamma = min(1.0, rate)
    corners = (_rand((n, c, h - bh + 1, w - bw + 1), x, generator) < gamma).to(x.dtype)
    # a block whose top-left corner is (i, j) covers rows i..i+bh-1 and columns j..j+bw-1,
    # so a pixel is dropped when a corner lies in the bh x bw window above and left of it
    padded = F.pad(corners, (bw - 1, bw - 1, bh - 1, bh - 1))
    keep = 1 - F.max_pool2d(padded, (bh, bw), stride=1)
    # counted in at least float32: a float16 sum overflows past 65504
    kept = keep.sum(dtype=torch.promote_types(x.dtype, torch.float32)).clamp_min(1)
    return x * (keep * (keep.numel() / kept).to(x.dtype))


class Dropout(nn.Module):
    """Inverted dropout from scratch; see `dropout`. A tensor p is kept as a buffer."""

    def __init__(self, p: float | torch.Tensor = 0.5):
        super().__init__()
        p = _check_p(p)
        if isinstance(p, torch.Tensor):
            self.register_buffer("p", p.detach().clone(), persistent=False)
        else:
            self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _dropout(x, self.p, self.training, None)

    def extra_repr(self) -> str:
        if isinstance(self.p, torch.Tensor):
            return f"p=tensor of shape {tuple(self.p.shape)}"
        return f"p={self.p}"


class ChannelDropout(Dropout):
    """Channel dropout with a number or tensor p (a buffer); see `channel_dropout`."""

    def __init__(self, p: float | torch.Tensor = 0.5, unbatched: int | None = None):
        super().__init__(p)
        self.unbatched = unbatched

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _channel_dropout(x, self.p, self.training, self.unbatched, None)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, unbatched={self.unbatched}"


class DropPath(Dropout):
    """Stochastic depth for a residual branch; see `drop_path`. A tensor p is a buffer."""

    def __init__(self, p: float | torch.Tensor = 0.1):
        super().__init__(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _drop_path(x, self.p, self.training, None)


class DropBlock2d(Dropout):
    """DropBlock for (N, C, H, W) feature maps; see `drop_block2d`. A tensor p is a buffer."""

    def __init__(self, p: float | torch.Tensor = 0.1, block_size: int = 7):
        super().__init__(p)
        self.block_size = _checks.positive_int("block_size", block_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _drop_block2d(x, self.p, self.block_size, self.training, None)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, block_size={self.block_size}"
