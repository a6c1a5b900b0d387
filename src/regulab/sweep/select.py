"""Choosing the strength from a regularization path by validation loss.

Rule "min" takes the lowest validation loss. Rule "one_se" takes the strongest
regularization whose validation loss is within one standard error of that
minimum (Breiman et al. 1984, "Classification and Regression Trees"; Hastie,
Tibshirani & Friedman, "The Elements of Statistical Learning", 2nd ed., 7.10):
a simpler model that the data cannot tell apart from the best one. The test set
never takes part.
"""

import math

from regulab.errors import NothingToChoose

RULES = ("min", "one_se")


def _usable(row: dict) -> bool:
    """True if the row completed and has a finite validation loss."""
    loss = row.get("val_loss")
    return row.get("status") == "completed" and loss is not None and math.isfinite(loss)


def choose(rows: list[dict], rule: str = "min") -> int:
    """Index of the chosen strength in `rows` (a path in ascending lambda order).

    "min": the completed row with the lowest finite val_loss (the first on ties).
    "one_se": the largest lambda whose val_loss <= val_loss + val_loss_se of
    that minimum row. Diverged rows are never chosen.
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(map(repr, RULES))}; got {rule!r}")
    if not rows:
        raise ValueError("rows must hold at least one row of the path; got none")
    lambdas = [row["lambda"] for row in rows]
    for i in range(1, len(lambdas)):
        if not lambdas[i] > lambdas[i - 1]:
            raise ValueError(
                "rows must be in strictly ascending lambda order (each lambda once); "
                f"got lambda = {lambdas[i - 1]:g} before {lambdas[i]:g} at rows {i - 1} and {i}"
            )
    usable = [i for i, row in enumerate(rows) if _usable(row)]
    if not usable:
        diverged = sum(row.get("status") == "diverged" for row in rows)
        raise NothingToChoose(
            f"no row has a finite validation loss to choose by: {diverged} of {len(rows)} "
            "strengths diverged (lower the learning rate, or raise the smallest strength)"
        )
    best = min(usable, key=lambda i: rows[i]["val_loss"])  # min keeps the first on ties
    if rule == "min":
        return best
    se = rows[best].get("val_loss_se")
    if se is None or not math.isfinite(se) or se < 0:
        raise ValueError(
            "rule 'one_se' needs a finite val_loss_se >= 0 at the best strength "
            f"(lambda = {lambdas[best]:g}); got {se!r}: use rule 'min'"
        )
    threshold = rows[best]["val_loss"] + se
    return max(i for i in usable if rows[i]["val_loss"] <= threshold)
