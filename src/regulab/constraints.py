"""Hard constraints on the weights: max-norm projection.

A penalty lam * ||w||^2 / 2 is the soft form of the constraint ||w||^2 <= theta:
for every active radius there is a lam with the same solution (Lagrange
duality; `regulab.demos.equivalence` checks it numerically). The hard form projects
the weights back onto the ball after each optimizer step (projected gradient
descent), as in max-norm regularization with dropout (Srivastava et al.,
JMLR 2014, section 5.1).
"""

import torch

from regulab import _checks


@torch.no_grad()
def max_norm_(params, max_norm: float, dim: int | None = None) -> None:
    """Project weights in place onto the L2 ball of radius `max_norm`.

    dim=None constrains each tensor as a whole: w <- w * min(1, max_norm / ||w||).
    An integer dim constrains each slice along that dimension on its own, as
    `torch.renorm` does: dim=0 caps the incoming-weight norm of every output unit
    of a Linear weight (out, in) and of every filter of a Conv weight
    (out, in, kh, kw), which is what Keras's `MaxNorm` (axis=0 on its transposed
    kernels) does. Weights already inside the ball are left exactly unchanged.
    Call it after `optimizer.step()`.
    """
    max_norm = _checks.non_negative("max_norm", max_norm)
    items = _checks.tensors("params", params)
    if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int)):
        raise ValueError(f"dim must be None (whole tensor) or an integer dimension; got {dim!r}")
    for p in items:
        if dim is None:
            norm = torch.linalg.vector_norm(p)
            p.mul_(_shrink(norm, max_norm))
            continue
        if not -p.ndim <= dim < p.ndim:
            raise ValueError(
                f"dim must be in [{-p.ndim}, {p.ndim - 1}] for a tensor of shape "
                f"{tuple(p.shape)}; got {dim}"
            )
        others = [d for d in range(p.ndim) if d != dim % p.ndim]
        norms = torch.linalg.vector_norm(p, dim=others, keepdim=True) if others else p.abs()
        p.mul_(_shrink(norms, max_norm))


def _shrink(norms: torch.Tensor, max_norm: float) -> torch.Tensor:
    """min(1, max_norm / norm), elementwise; 1 where norm <= max_norm (including 0)."""
    return torch.where(norms > max_norm, max_norm / norms.clamp_min(1e-30), 1.0).to(norms.dtype)
