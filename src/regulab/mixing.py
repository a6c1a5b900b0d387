"""Mixup and CutMix: train on mixed pairs of examples with mixed soft targets.

* `mixup` (Zhang et al., arXiv:1710.09412): lam x + (1 - lam) x[index], lam ~ Beta(alpha, alpha).
* `cutmix` (Yun et al., arXiv:1905.04899): a box of area (1 - lam) H W cut from
  x[index] and pasted into x; lam is then corrected to the box's real area after
  clipping at the border. Targets: lam y + (1 - lam) y[index], as soft targets (N, C).
* `Mixup`: a `batch_fn` for `fit` choosing between them per batch, as timm's `Mixup`.

Draws: every call draws three uniforms u, then a random permutation `index` of the
batch (the partner of example i is x[index[i]], as in the papers' code; timm flips
the batch instead). lam is the Beta(alpha, alpha) quantile of u[0] (`beta_lambda`),
CutMix's box centre is u[1:] times (H, W). The draws do not depend on alpha, so
runs with different alphas see common random numbers. They come from `generator`,
or from torch's global CPU generator (which `fit` reseeds every epoch), on the
generator's device, so the CPU and a GPU see the same mixes. alpha = 0 is the
identity: lam = 1, x unchanged, one-hot targets.

Stacked copies: alpha may be a (K,) tensor. The batch x (N, ...) is then mixed K
ways, with the same u, index and centre, copy k with lam_k = the quantile of u[0]
under Beta(alpha_k, alpha_k): x (K, N, ...) and targets (K, N, C), as
`sweep.stacked.Stacked.forward(x, batched_x=True)` takes them. Copy k equals the
call with float(alpha[k]) from the same generator state, so a stacked run sees
what K sequential runs see.
"""

import numpy as np
import torch
from torch.nn import functional as F

from regulab import _checks


def beta_lambda(alpha, u) -> torch.Tensor:
    """The Beta(alpha, alpha) quantile of uniforms u: float64 on the CPU, shape of alpha and u
    broadcast; alpha 0 gives 1 (no mixing). Inverse CDF, so lam is monotone in u."""
    from scipy.special import betaincinv  # imported here: `import regulab.mixing` stays light

    a = torch.as_tensor(alpha, dtype=torch.float64).cpu().numpy()
    u = torch.as_tensor(u, dtype=torch.float64).cpu().numpy()
    low = np.minimum(u, 1 - u)  # from the nearer tail: lam(1 - u) = 1 - lam(u) exactly
    with np.errstate(all="ignore"):
        q = betaincinv(a, a, low)
    lam = np.where(u <= 0.5, q, 1 - q)
    return torch.from_numpy(np.where(a == 0, 1.0, lam))


def mixup(x, y, alpha, num_classes: int, *, generator=None, lam=None, index=None):
    """(lam x + (1 - lam) x[index], soft targets) of a batch x (N, ...) and labels y.

    y: class indices (N,) or probabilities (N, num_classes). alpha: a number >= 0, or a
    (K,) tensor for K stacked copies (see the module docstring). lam (a number, or (K,))
    and index ((N,) partners) replace the drawn ones; the generator advances regardless.
    """
    alphas, stacked = _alphas(alpha)
    _check_batch("mixup", x, y, num_classes)
    if not x.is_floating_point():
        raise ValueError(f"mixup needs floating-point x; got {x.dtype}: pass x.float()")
    u, drawn = _draw(len(x), generator)
    lam = _lam(lam, alphas, u[0], stacked)
    index = _index(index, drawn, len(x)).to(x.device)
    w = _expand(lam.to(x.device, x.dtype), x.ndim, stacked)
    mixed = w * x + (1 - w) * x[index]
    return mixed, _targets(y, num_classes, lam, index, x.dtype, stacked)


def cutmix(x, y, alpha, num_classes: int, *, generator=None, lam=None, index=None, center=None):
    """(x with a box from x[index] pasted in, soft targets) of images x (N, ..., H, W).

    The box is ch x cw with ch = floor(H sqrt(1 - lam)), cw = floor(W sqrt(1 - lam)),
    rows cy - ch // 2 .. cy - ch // 2 + ch - 1 (columns alike), clipped at the border;
    the targets' lam is 1 - (its clipped area) / (H W). lam, index and center ((cy, cx)
    pixels) replace the drawn ones; alpha, y and num_classes as in `mixup`.
    """
    alphas, stacked = _alphas(alpha)
    _check_batch("cutmix", x, y, num_classes)
    if x.ndim < 3:
        raise ValueError(f"cutmix needs images x (N, ..., H, W); got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    u, drawn = _draw(len(x), generator)
    lam = _lam(lam, alphas, u[0], stacked)
    cy, cx = _center(center, u, h, w)
    rows, area_h = _span(lam, h, cy)
    cols, area_w = _span(lam, w, cx)
    lam = 1 - (area_h * area_w).double() / (h * w)  # the box's real area, after clipping
    box = (rows[..., :, None] & cols[..., None, :]).to(x.device)  # (H, W) or (K, H, W)
    if stacked:
        box = box.reshape(len(box), *[1] * (x.ndim - 2), h, w)
    index = _index(index, drawn, len(x)).to(x.device)
    mixed = torch.where(box, x[index], x)
    return mixed, _targets(y, num_classes, lam, index, _float(x.dtype), stacked)


class Mixup:
    """A `batch_fn` (x, y) -> (mixed x, soft targets) for `fit`, mixing only in training.

    Per batch, with probability `prob`, mixup (alpha) or CutMix (cutmix_alpha), CutMix
    with probability switch_prob when both are > 0 (timm's `Mixup`); otherwise the
    targets are one-hot. It mixes only while gradients are enabled: `fit` evaluates
    (val, test, the training subset) under `torch.no_grad`, where the batch passes
    unchanged, with its class indices, so accuracy is measured on real labels. Pair it
    with a loss that takes both, `soft_target_cross_entropy` or "cross_entropy".
    """

    def __init__(
        self,
        alpha: float = 1.0,
        cutmix_alpha: float = 0.0,
        prob: float = 1.0,
        switch_prob: float = 0.5,
        *,
        num_classes: int,
        generator: torch.Generator | None = None,
    ):
        self.alpha = _checks.non_negative("alpha", alpha)
        self.cutmix_alpha = _checks.non_negative("cutmix_alpha", cutmix_alpha)
        self.prob = _checks.probability("prob", prob)
        self.switch_prob = _checks.probability("switch_prob", switch_prob)
        self.num_classes = _checks.positive_int("num_classes", num_classes)
        self.generator = _check_generator(generator)

    def __call__(self, batch):
        if not isinstance(batch, tuple | list) or len(batch) != 2:
            raise TypeError(f"Mixup takes (x, y) batches; got {type(batch).__name__}")
        x, y = batch
        if not torch.is_grad_enabled():
            return x, y
        device = self.generator.device if self.generator is not None else "cpu"
        apply, switch = torch.rand(2, generator=self.generator, device=device).tolist()
        lam = None if apply < self.prob else 1.0
        if self.cutmix_alpha > 0 and (self.alpha == 0 or switch < self.switch_prob):
            return cutmix(
                x, y, self.cutmix_alpha, self.num_classes, generator=self.generator, lam=lam
            )
        return mixup(x, y, self.alpha, self.num_classes, generator=self.generator, lam=lam)

    def __repr__(self) -> str:
        return (
            f"Mixup(alpha={self.alpha}, cutmix_alpha={self.cutmix_alpha}, prob={self.prob}, "
            f"switch_prob={self.switch_prob}, num_classes={self.num_classes})"
        )


def _alphas(alpha) -> tuple[torch.Tensor, bool]:
    """(alpha as a float64 CPU tensor, whether it holds one value per stacked copy)."""
    if isinstance(alpha, torch.Tensor) and alpha.ndim > 0:
        a = alpha.detach().double().cpu()
        if a.ndim != 1 or len(a) == 0 or not bool((a.isfinite() & (a >= 0)).all()):
            raise ValueError(
                "alpha must be a number >= 0 or a (K,) tensor of finite values >= 0; "
                f"got {alpha.tolist() if alpha.numel() <= 8 else tuple(alpha.shape)}"
            )
        return a, True
    value = float(alpha) if isinstance(alpha, torch.Tensor) else alpha
    return torch.tensor(_checks.non_negative("alpha", value), dtype=torch.float64), False


def _check_batch(name, x, y, num_classes) -> None:
    _checks.positive_int("num_classes", num_classes)
    if not isinstance(x, torch.Tensor) or x.ndim < 1:
        raise TypeError(f"{name} needs a batch x (N, ...) as a tensor; got {type(x).__name__}")
    soft = (len(x), num_classes)
    if not isinstance(y, torch.Tensor) or (
        tuple(y.shape) != (len(x),) if not y.is_floating_point() else tuple(y.shape) != soft
    ):
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(
            f"y must be class indices ({len(x)},) or probabilities {soft} for x of shape "
            f"{tuple(x.shape)}; got {got}"
        )


def _check_generator(generator):
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None; got {generator!r}")
    return generator


def _draw(n: int, generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Three uniforms (float64, CPU) and a permutation of n, from generator or the CPU's."""
    device = _check_generator(generator).device if generator is not None else "cpu"
    u = torch.rand(3, generator=generator, device=device, dtype=torch.float64).cpu()
    return u, torch.randperm(n, generator=generator, device=device)


def _lam(lam, alphas: torch.Tensor, u: torch.Tensor, stacked: bool) -> torch.Tensor:
    """The drawn lambdas, or the given ones checked: float64 CPU, shape () or (K,)."""
    if lam is None:
        return beta_lambda(alphas, u)
    given = torch.as_tensor(lam, dtype=torch.float64).detach().cpu()
    if given.shape != alphas.shape or not bool(((given >= 0) & (given <= 1)).all()):
        raise ValueError(
            f"lam must be in [0, 1] with alpha's shape {tuple(alphas.shape)}; got {lam!r}"
        )
    return given


def _index(index, drawn: torch.Tensor, n: int) -> torch.Tensor:
    if index is None:
        return drawn
    if not isinstance(index, torch.Tensor) or index.shape != (n,) or index.is_floating_point():
        got = tuple(index.shape) if isinstance(index, torch.Tensor) else type(index).__name__
        raise ValueError(f"index must be an integer tensor ({n},) of partners; got {got}")
    return index.long()


def _center(center, u: torch.Tensor, h: int, w: int) -> tuple[int, int]:
    if center is None:
        return int(u[1] * h), int(u[2] * w)
    cy, cx = center
    if not (0 <= cy < h and 0 <= cx < w):
        raise ValueError(f"center must be (cy, cx) inside the {h} x {w} image; got {center!r}")
    return int(cy), int(cx)


def _span(lam: torch.Tensor, size: int, centre: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(which of `size` positions the box covers, shape lam + (size,); its clipped length)."""
    cut = torch.floor(size * torch.sqrt(1 - lam)).long()
    start = (centre - cut // 2).clamp(0, size)
    stop = (centre - cut // 2 + cut).clamp(0, size)
    at = torch.arange(size)
    return (at >= start[..., None]) & (at < stop[..., None]), stop - start


def _targets(y, num_classes, lam, index, dtype, stacked) -> torch.Tensor:
    """lam y + (1 - lam) y[index] on one-hot or soft targets (N, C); (K, N, C) if stacked."""
    t = y.to(dtype) if y.is_floating_point() else F.one_hot(y.long(), num_classes).to(dtype)
    w = _expand(lam.to(t.device, dtype), t.ndim, stacked)
    return w * t + (1 - w) * t[index.to(t.device)]


def _expand(lam: torch.Tensor, ndim: int, stacked: bool) -> torch.Tensor:
    """lam () as it is, or (K,) as (K, 1, ..., 1) to broadcast over a batch of ndim dimensions."""
    return lam.reshape(len(lam), *[1] * ndim) if stacked else lam


def _float(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype.is_floating_point else torch.get_default_dtype()
