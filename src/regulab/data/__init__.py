"""Data sets: synthetic regression data (more data sets come with the training engine)."""

from regulab.data.synthetic import synthetic_linear

__all__ = ["synthetic_linear"]
