"""Network slimming (Liu et al., ICCV 2017, arXiv:1708.06519): L1 on BatchNorm scales,
global channel pruning into a genuinely smaller network.

- `sparsity`: the L1 term s * sign(gamma) on BatchNorm scales (as a `Penalty`) or its
  proximal step, and the |gamma| histogram.
- `plan`: which channels to remove, ranked globally by |gamma|, with coupled channels
  (residual additions) scored and removed together; a plan is data you can print.
- `surgery`: applies a plan with Torch-Pruning's dependency graph, and the masked copy
  it is checked against.
"""
