"""Synthetic linear-regression data for the weight-decay experiment.

The high-dimensional setting of Dive into Deep Learning, section 3.7 "Weight
Decay" (Zhang et al., d2l.ai): few examples, many inputs, a small true weight.
"""

import torch

from regulab import _checks


def synthetic_linear(
    n: int,
    num_inputs: int = 200,
    true_w: float | torch.Tensor = 0.01,
    true_b: float = 0.05,
    noise: float = 0.01,
    *,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw n examples of y = true_b + X @ true_w + eps, X ~ N(0, 1), eps ~ N(0, noise^2).

    true_w is one number (every input gets that weight) or a tensor of num_inputs
    weights. Randomness comes from `generator` (draw train then test from one
    stream) or from a fresh generator seeded with `seed`; give at most one. The
    numbers are drawn in float64 and then cast to `dtype`, so a float32 and a
    float64 run see the same data up to rounding.

    Returns X of shape (n, num_inputs) and y of shape (n,), on the CPU.
    """
    _checks.positive_int("n", n)
    _checks.positive_int("num_inputs", num_inputs)
    _checks.non_negative("noise", noise)
    if generator is not None and seed is not None:
        raise ValueError("give either generator or seed, not both; got both")
    if seed is not None:
        generator = torch.Generator().manual_seed(seed)
    if isinstance(true_w, torch.Tensor):
        if true_w.shape != (num_inputs,):
            raise ValueError(
                f"true_w must be a number or a tensor of shape ({num_inputs},); "
                f"got shape {tuple(true_w.shape)}"
            )
        w = true_w.to(torch.float64)
    else:
        w = torch.full((num_inputs,), float(true_w), dtype=torch.float64)
    x = torch.randn(n, num_inputs, generator=generator, dtype=torch.float64)
    eps = torch.randn(n, generator=generator, dtype=torch.float64) * noise
    y = x @ w + float(true_b) + eps
    return x.to(dtype), y.to(dtype)
