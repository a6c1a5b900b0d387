"""The teaching experiments: weight decay on linear regression, soft vs hard constraints.

`weight_decay` and `equivalence`/`geometry` compute; their `*_report` modules
render; `run` writes each experiment's run folder.
"""
