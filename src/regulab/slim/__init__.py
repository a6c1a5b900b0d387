"""Network slimming (Liu et al., ICCV 2017, arXiv:1708.06519): L1 on BatchNorm scales,
global channel pruning into a genuinely smaller network.

- `regulab.bn_sparsity` (the library layer, re-exported here): the L1 term
  s * sign(gamma) on BatchNorm scales (as a `Penalty`) or its proximal step, and the
  |gamma| histogram.
- `coupling`: which channels go together (Torch-Pruning's dependency groups; whole
  positions of grouped convolutions), and which groups it cannot re-index (held).
- `plan`: which channels to remove, ranked globally by |gamma|, with coupled channels
  (residual additions) scored and removed together, ties cut in proportion; a plan is
  data you can print.
- `surgery`: applies a plan with Torch-Pruning's dependency graph, and the masked copy
  it is checked against.
- `export`: `save` / `load` any pruned model without pickle (safetensors + arch.json).
"""

from regulab.bn_sparsity import bn_scales, gamma_histogram, prox_bn_, sparsity_penalty
from regulab.slim import measure
from regulab.slim.export import load, save
from regulab.slim.plan import Plan, plan
from regulab.slim.surgery import masked, prune

__all__ = [
    "Plan",
    "bn_scales",
    "gamma_histogram",
    "load",
    "masked",
    "measure",
    "plan",
    "prox_bn_",
    "prune",
    "save",
    "sparsity_penalty",
]
