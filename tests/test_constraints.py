"""max_norm_ against torch.renorm, Keras MaxNorm and a Python loop."""

import math

import numpy as np
import pytest
import torch

from regulab import max_norm_


def test_whole_tensor_projection_matches_a_python_loop():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(4, 5, generator=g, dtype=torch.float64) * 3
    norm = math.sqrt(sum(float(v) ** 2 for v in w.flatten()))
    expected = w * (2.0 / norm)
    max_norm_(w, 2.0)
    assert torch.allclose(w, expected, rtol=0, atol=1e-14)
    assert float(w.norm()) == pytest.approx(2.0, rel=1e-14)


def test_weights_inside_the_ball_are_left_exactly_unchanged():
    w = torch.tensor([[0.3, 0.4], [3.0, 4.0]])
    rows_before = w.clone()
    max_norm_(w, 5.0, dim=0)
    assert torch.equal(w, rows_before)
    max_norm_(w, 1.0, dim=0)
    assert torch.equal(w[0], rows_before[0])
    assert torch.allclose(w[1], torch.tensor([0.6, 0.8]))


@pytest.mark.parametrize(
    ("shape", "dim"), [((6, 4), 0), ((6, 4), 1), ((5, 3, 2, 2), 0), ((6, 4), -1)]
)
def test_per_slice_projection_matches_torch_renorm(shape, dim):
    g = torch.Generator().manual_seed(1)
    w = torch.randn(*shape, generator=g, dtype=torch.float64)
    expected = torch.renorm(w, 2, dim, 1.5)  # renorm divides by norm + 1e-7
    max_norm_(w, 1.5, dim=dim)
    assert (w - expected).abs().max() < 1e-6
    norms = torch.linalg.vector_norm(w.movedim(dim, 0).reshape(w.shape[dim], -1), dim=1)
    assert float(norms.max()) <= 1.5 * (1 + 1e-12)


def test_dim_0_is_keras_maxnorm_on_the_transposed_kernel():
    g = torch.Generator().manual_seed(2)
    torch_weight = torch.randn(7, 5, generator=g, dtype=torch.float64)  # Linear: (out, in)
    kernel = torch_weight.numpy().T.copy()  # Keras Dense kernel: (in, out)
    # keras.constraints.MaxNorm(max_value=1.0, axis=0)
    norms = np.sqrt(np.sum(np.square(kernel), axis=0, keepdims=True))
    keras = kernel * (np.clip(norms, 0, 1.0) / (1e-7 + norms))
    max_norm_(torch_weight, 1.0, dim=0)
    assert np.abs(torch_weight.numpy().T - keras).max() < 1e-6


def test_several_tensors_are_constrained_one_by_one():
    a, b = torch.full((4,), 2.0), torch.full((9,), 0.1)
    max_norm_([a, b], 1.0)
    assert float(a.norm()) == pytest.approx(1.0)
    assert torch.equal(b, torch.full((9,), 0.1))


def test_radius_zero_gives_zeros():
    w = torch.randn(3, 3)
    max_norm_(w, 0.0, dim=0)
    assert torch.equal(w, torch.zeros(3, 3))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_norm": -1.0}, "max_norm"),
        ({"max_norm": 1.0, "dim": 2}, "dim"),
        ({"max_norm": 1.0, "dim": 0.5}, "dim"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        max_norm_(torch.ones(2, 2), **kwargs)


def test_per_slice_projection_applies_to_every_tensor():
    a, b = torch.full((2, 3), 2.0), torch.full((4, 2), 3.0)
    max_norm_([a, b], 1.0, dim=0)
    for t in (a, b):
        assert torch.allclose(t.norm(dim=1), torch.ones(t.shape[0]))
