"""Choosing the strength: K regularization strengths trained at once, the path, selection.

- `engine`: K copies of a model stacked along a leading dimension and trained in
  one vectorized run (`torch.func.stack_module_state` + `functional_call` +
  `vmap`); each copy gets its own strength (L2 / weight decay, L1, dropout p,
  BatchNorm sparsity). Linear regression has a batched-matmul fast path. Its
  `Settings` are the recipe's own sections (optim, penalty, slim, train); a
  copy's strength replaces the recipe field `regulab.recipe.schema.SWEEPABLE` names.
- `path`: a recipe and a grid -> one row per strength (train / validation /
  test loss, ||w||, sparsity), on a holdout split or k folds.
- `select`: the strength with the lowest validation loss, or the one-standard-
  error rule; the test set never takes part.
- `grid`: "0,logspace(-3,2,32)" -> a sorted list of strengths.
- `fit_stacked`: several hyperparameters per copy at once (`hparams`); `state.StackedRun`:
  the stacked training advanced epoch by epoch, shrunk (`keep`) or copied
  (`copy_into`) as tensor operations, what successive halving and PBT need.
- `search`: `LambdaSearch`, all of the above behind the scikit-learn contract;
  `ray_engine` spreads the grid over Ray Tune trials.
"""

from regulab.sweep.engine import PARAMS, Settings, Stacked, fit_stacked, fit_sweep
from regulab.sweep.grid import parse_grid
from regulab.sweep.search import LambdaSearch
from regulab.sweep.select import choose
from regulab.sweep.state import StackedRun

__all__ = [
    "PARAMS",
    "LambdaSearch",
    "Settings",
    "Stacked",
    "StackedRun",
    "choose",
    "fit_stacked",
    "fit_sweep",
    "parse_grid",
]
