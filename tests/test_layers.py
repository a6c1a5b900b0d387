"""Dropout, ChannelDropout, DropPath and DropBlock2d, tested statistically at fixed seeds.

Statistical tolerances are 5 standard deviations of the quantity measured: for a
drop fraction over n independent Bernoulli(p) draws, sigma = sqrt(p (1 - p) / n).
At a fixed seed the tests are deterministic; 5 sigma leaves a wide margin, yet
a wrong rate (say p instead of 1 - p, or a missing rescale) is many sigma away.
References are independent of the code under test: closed forms, plain-Python
loops and `torch.nn.functional.dropout`.
"""

import math
import warnings

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from regulab.layers import (
    ChannelDropout,
    DropBlock2d,
    Dropout,
    DropPath,
    channel_dropout,
    drop_block2d,
    drop_path,
    dropout,
)

SIGMAS = 5.0  # how many standard deviations a statistical check allows


def binomial_sigma(p: float, n: int) -> float:
    """Standard deviation of the fraction of successes in n Bernoulli(p) draws."""
    return math.sqrt(p * (1 - p) / n)


def bad_p_values():
    return [
        -0.1,
        1.5,
        float("nan"),
        True,
        torch.tensor([0.5, 1.2]),
        torch.tensor([-0.1, 0.5]),
        torch.tensor([float("nan")]),
    ]


# --------------------------------------------------------------------------- dropout


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.9])
def test_dropout_drops_a_fraction_p_within_5_sigma(p):
    torch.manual_seed(0)
    x = torch.ones(400, 500)
    dropped = (dropout(x, p) == 0).double().mean().item()
    assert abs(dropped - p) <= SIGMAS * binomial_sigma(p, x.numel())


@pytest.mark.parametrize("p", [0.2, 0.6])
def test_dropout_preserves_the_expectation_within_5_sigma(p):
    torch.manual_seed(1)
    x = torch.rand(400, 500, dtype=torch.float64) + 0.5
    out = dropout(x, p)
    # out_i - x_i has mean 0 and variance x_i^2 p / (1 - p), independently per element
    sigma = math.sqrt((x**2).sum().item() * p / (1 - p)) / x.numel()
    assert abs(out.mean().item() - x.mean().item()) <= SIGMAS * sigma


@pytest.mark.parametrize("p", [0.5, 0.75])
def test_dropout_kept_elements_are_exactly_x_over_1_minus_p(p):
    # 1 / (1 - p) is a power of two here, so the scaled values are exact in float32
    torch.manual_seed(2)
    x = torch.randn(100, 100)
    out = dropout(x, p)
    kept = out != 0
    assert kept.any() and not kept.all()
    assert torch.equal(out[kept], x[kept] / (1 - p))


def test_dropout_kept_elements_equal_x_over_1_minus_p_to_float64_rounding():
    torch.manual_seed(3)
    x = torch.randn(100, 100, dtype=torch.float64)
    out = dropout(x, 0.3)
    kept = out != 0
    torch.testing.assert_close(out[kept], x[kept] / 0.7, rtol=1e-15, atol=0)


def test_dropout_with_training_false_returns_x_unchanged():
    x = torch.randn(50, 50)
    assert torch.equal(dropout(x, 0.5, training=False), x)


def test_dropout_module_in_eval_is_the_identity_and_drops_in_training():
    torch.manual_seed(4)
    x = torch.randn(50, 50)
    layer = Dropout(0.5)
    assert (layer(x) == 0).any()
    layer.eval()
    assert torch.equal(layer(x), x)


def test_dropout_with_p_1_returns_zeros():
    x = torch.randn(30, 30)
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))


def test_dropout_with_p_0_is_the_identity_in_training():
    x = torch.randn(30, 30)
    assert torch.equal(dropout(x, 0.0), x)


@pytest.mark.parametrize("p", [0.2, 0.7])
def test_dropout_matches_the_distribution_of_torch_dropout(p):
    x = torch.ones(400, 500)
    torch.manual_seed(5)
    ours = dropout(x, p)
    torch.manual_seed(6)
    theirs = F.dropout(x, p, training=True)
    sigma = binomial_sigma(p, x.numel())
    ours_dropped = (ours == 0).double().mean().item()
    theirs_dropped = (theirs == 0).double().mean().item()
    # the difference of two independent fractions has standard deviation sqrt(2) sigma
    assert abs(ours_dropped - theirs_dropped) <= SIGMAS * math.sqrt(2) * sigma
    assert abs(theirs_dropped - p) <= SIGMAS * sigma
    # the survivors take the same single value, 1 / (1 - p)
    ours_values = ours[ours != 0].unique()
    theirs_values = theirs[theirs != 0].unique()
    assert ours_values.numel() == theirs_values.numel() == 1
    torch.testing.assert_close(ours_values, theirs_values, rtol=1e-6, atol=0)


def test_dropout_tensor_p_gives_each_row_its_own_rate():
    torch.manual_seed(7)
    rates = [0.1, 0.3, 0.5, 0.8]
    p = torch.tensor(rates).view(-1, 1, 1)
    x = torch.ones(len(rates), 200, 200)
    out = dropout(x, p)
    for k, rate in enumerate(rates):
        dropped = (out[k] == 0).double().mean().item()
        assert abs(dropped - rate) <= SIGMAS * binomial_sigma(rate, out[k].numel())
        kept_values = out[k][out[k] != 0]
        torch.testing.assert_close(kept_values, torch.full_like(kept_values, 1 / (1 - rate)))


def test_dropout_tensor_p_with_zeros_and_ones_has_no_nan():
    torch.manual_seed(8)
    p = torch.tensor([[0.0], [1.0], [0.5]])
    x = torch.randn(3, 1000, requires_grad=True)
    out = dropout(x, p)
    out.sum().backward()
    assert not out.isnan().any()
    assert torch.isfinite(x.grad).all()
    assert torch.equal(out[0], x[0])
    assert torch.equal(out[1], torch.zeros(1000))


def test_dropout_tensor_p_works_inside_vmap_with_different_randomness():
    rates = [0.0, 0.2, 0.5, 0.5, 1.0]
    p = torch.tensor(rates)
    x = torch.ones(len(rates), 200, 200)
    torch.manual_seed(9)
    out = torch.func.vmap(dropout, in_dims=(0, 0), randomness="different")(x, p)
    assert out.shape == x.shape
    for k, rate in enumerate(rates):
        dropped = (out[k] == 0).double().mean().item()
        assert abs(dropped - rate) <= SIGMAS * binomial_sigma(rate, out[k].numel())
    assert torch.equal(out[0], x[0])
    assert torch.equal(out[4], torch.zeros_like(x[4]))
    # two models with the same rate draw different masks
    assert not torch.equal(out[2], out[3])


@pytest.mark.parametrize("p", [0.3, torch.tensor([[0.1], [0.6]], dtype=torch.float64)])
def test_dropout_gradient_is_the_mask_scale(p):
    torch.manual_seed(10)
    x = torch.randn(2, 500, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(2, 500, dtype=torch.float64)
    out = dropout(x, p)
    out.backward(upstream)
    p_full = torch.as_tensor(p, dtype=torch.float64).expand_as(x)
    expected_scale = (out != 0).double() / (1 - p_full)
    torch.testing.assert_close(x.grad, upstream * expected_scale, rtol=1e-12, atol=0)


def test_dropout_gradient_agrees_with_finite_differences():
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)

    def fixed_mask_dropout(inp):
        return dropout(inp, 0.4, generator=torch.Generator().manual_seed(0))

    assert torch.autograd.gradcheck(fixed_mask_dropout, (x,), eps=1e-6, atol=1e-8)


def test_dropout_generator_makes_results_reproducible():
    x = torch.randn(100, 100)
    a = dropout(x, 0.5, generator=torch.Generator().manual_seed(123))
    b = dropout(x, 0.5, generator=torch.Generator().manual_seed(123))
    c = dropout(x, 0.5, generator=torch.Generator().manual_seed(124))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


INVALID_P_CALLS = {
    "dropout": lambda p: dropout(torch.ones(3, 3), p),
    "dropout_eval": lambda p: dropout(torch.ones(3, 3), p, training=False),
    "Dropout": Dropout,
    "drop_path": lambda p: drop_path(torch.ones(3, 3), p),
    "DropPath": DropPath,
}


@pytest.mark.parametrize("call", INVALID_P_CALLS.values(), ids=INVALID_P_CALLS.keys())
@pytest.mark.parametrize("p", bad_p_values(), ids=repr)
def test_invalid_p_raises_value_error_naming_p(call, p):
    with pytest.raises(ValueError, match=r"\bp\b"):
        call(p)


def test_dropout_extra_repr_shows_p():
    assert "p=0.3" in repr(Dropout(0.3))
    assert "p=tensor of shape (3, 1, 1)" in repr(Dropout(torch.full((3, 1, 1), 0.2)))


def test_dropout_tensor_p_is_a_buffer():
    p = torch.tensor([0.1, 0.2])
    layer = Dropout(p)
    buffers = dict(layer.named_buffers())
    assert "p" in buffers
    assert torch.equal(buffers["p"], p)
    assert list(layer.parameters()) == []


# ------------------------------------------------------------------- channel_dropout


@pytest.mark.parametrize(
    "layer, unbatched, shape",
    [
        (nn.Dropout1d, 2, (200, 40, 5)), (nn.Dropout1d, 2, (400, 5)),  # batched, one example
        (nn.Dropout2d, None, (200, 40, 3, 3)), (nn.Dropout2d, None, (200, 40, 5)),  # as torch
        (nn.Dropout3d, 4, (200, 40, 2, 2, 2)), (nn.Dropout3d, 4, (400, 2, 2, 2)),
    ],
)  # fmt: skip
def test_channel_dropout_drops_whole_channels_at_rate_p_as_torch_does(layer, unbatched, shape):
    p = 0.3
    ours = ChannelDropout(p, unbatched)
    x = torch.ones(shape)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's note on 3-D input to Dropout2d
        out_theirs = layer(p)(x)
    out_ours = ours(x)
    lead = 1 if len(shape) == unbatched else 2
    for out in (out_theirs, out_ours):  # one draw per leading index: constant over the others
        flat = out.reshape(math.prod(shape[:lead]), -1)
        assert (flat == flat[:, :1]).all()
        first = flat[:, 0]
        assert ((first == 0) | ((first - 1 / (1 - p)).abs() < 1e-6)).all()
    kept = (out_ours.reshape(math.prod(shape[:lead]), -1)[:, 0] > 0).double()
    assert abs(kept.mean().item() - (1 - p)) < SIGMAS * binomial_sigma(p, len(kept))
    assert torch.equal(ours.eval()(x), x)  # eval() makes it the identity


def test_channel_dropout_function_is_the_module_and_takes_a_rate_per_example():
    x = torch.randn(8, 5, 3, 3)
    torch.manual_seed(1)
    by_function = channel_dropout(x, 0.4)
    torch.manual_seed(1)
    assert torch.equal(ChannelDropout(0.4)(x), by_function)
    assert channel_dropout(x, 0.4, training=False) is x
    p = torch.tensor([0.0] * 4 + [1.0] * 4).view(8, 1, 1, 1)
    out = channel_dropout(x, p)
    assert torch.equal(out[:4], x[:4]) and (out[4:] == 0).all()
    assert repr(ChannelDropout(0.2, 4)) == "ChannelDropout(p=0.2, unbatched=4)"


# ------------------------------------------------------------------------- drop_path


def test_drop_path_zeroes_or_scales_whole_examples():
    torch.manual_seed(11)
    p = 0.25
    x = torch.randn(1000, 3, 4, dtype=torch.float64)
    out = drop_path(x, p)
    dropped = (out == 0).flatten(1).all(dim=1)
    kept = ~dropped
    assert dropped.any() and kept.any()
    torch.testing.assert_close(out[kept], x[kept] / (1 - p), rtol=1e-15, atol=0)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_drop_path_drops_a_fraction_p_of_examples_within_5_sigma(p):
    torch.manual_seed(12)
    x = torch.ones(20000, 8)
    out = drop_path(x, p)
    dropped = (out == 0).all(dim=1).double().mean().item()
    assert abs(dropped - p) <= SIGMAS * binomial_sigma(p, x.shape[0])


def test_drop_path_in_eval_is_the_identity():
    x = torch.randn(64, 5)
    assert torch.equal(drop_path(x, 0.5, training=False), x)
    layer = DropPath(0.5).eval()
    assert torch.equal(layer(x), x)


def test_drop_path_extra_repr_shows_p():
    assert "p=0.2" in repr(DropPath(0.2))


# ---------------------------------------------------------------------- drop_block2d


def expected_block_drop_fraction(p: float, block_size: int, h: int, w: int) -> float:
    """Expected dropped fraction, by counting in plain Python the corners covering each pixel."""
    bh, bw = min(block_size, h), min(block_size, w)
    gamma = p * h * w / (bh * bw * (h - bh + 1) * (w - bw + 1))
    assert gamma <= 1, "choose p and block_size so that gamma is a probability"
    total = 0.0
    for r in range(h):
        for s in range(w):
            k = sum(
                1
                for i in range(h - bh + 1)
                for j in range(w - bw + 1)
                if i <= r < i + bh and j <= s < j + bw
            )
            total += 1 - (1 - gamma) ** k
    return total / (h * w)


@pytest.mark.parametrize(
    ("p", "block_size", "h", "w"),
    [
        (0.1, 3, 16, 16),
        (0.2, 2, 16, 16),
        (0.15, 4, 12, 17),
        (0.3, 5, 12, 17),
        (0.1, 1, 12, 17),
        (0.1, 7, 5, 9),  # block clipped to 5 x 7
    ],
)
def test_drop_block2d_drop_fraction_matches_the_counting_reference(p, block_size, h, w):
    torch.manual_seed(13)
    x = torch.ones(128, 16, h, w)
    out = drop_block2d(x, p, block_size)
    per_map = (out == 0).double().mean(dim=(2, 3)).flatten()
    # pixels of one map are correlated, so each map counts as one sample
    sigma = per_map.std().item() / math.sqrt(per_map.numel())
    expected = expected_block_drop_fraction(p, block_size, h, w)
    assert abs(per_map.mean().item() - expected) <= SIGMAS * sigma


def dropped_pixels_covered_by_all_zero_windows(zero: torch.Tensor, bh: int, bw: int):
    """Mark the pixels that lie in some bh x bw all-zero window fully inside the map."""
    h, w = zero.shape[-2:]
    rows, cols = h - bh + 1, w - bw + 1
    window_all_zero = torch.ones((*zero.shape[:-2], rows, cols), dtype=torch.bool)
    for a in range(bh):
        for b in range(bw):
            window_all_zero &= zero[..., a : a + rows, b : b + cols]
    covered = torch.zeros_like(zero)
    for a in range(bh):
        for b in range(bw):
            covered[..., a : a + rows, b : b + cols] |= window_all_zero
    return covered


@pytest.mark.parametrize(
    ("block_size", "h", "w"), [(5, 16, 16), (4, 12, 17), (2, 12, 17), (7, 5, 9)]
)
def test_drop_block2d_drops_unions_of_full_blocks(block_size, h, w):
    torch.manual_seed(14)
    x = torch.rand(8, 4, h, w) + 0.5
    zero = drop_block2d(x, 0.1, block_size) == 0
    assert zero.any()
    covered = dropped_pixels_covered_by_all_zero_windows(
        zero, min(block_size, h), min(block_size, w)
    )
    assert torch.equal(covered, zero)


def test_drop_block2d_rescales_survivors_by_numel_over_kept():
    torch.manual_seed(15)
    x = torch.rand(8, 4, 12, 17, dtype=torch.float64) + 0.5
    out = drop_block2d(x, 0.2, 3)
    kept = out != 0
    n_kept = int(kept.sum())
    assert 0 < n_kept < x.numel()
    expected = x * (x.numel() / n_kept)
    torch.testing.assert_close(out[kept], expected[kept], rtol=1e-12, atol=0)


@pytest.mark.parametrize("block_size", [1, 3, 6])
def test_drop_block2d_preserves_the_mean_within_5_sigma(block_size):
    torch.manual_seed(16)
    x = torch.rand(64, 8, 12, 17, dtype=torch.float64) + 0.5
    out = drop_block2d(x, 0.3, block_size)
    n_kept = int((out != 0).sum())
    # the output mean is the mean of x over the kept pixels, x independent of the mask
    sigma = x.std().item() / math.sqrt(n_kept)
    assert abs(out.mean().item() - x.mean().item()) <= SIGMAS * sigma


def test_drop_block2d_in_eval_and_with_p_0_is_the_identity():
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(drop_block2d(x, 0.5, 3, training=False), x)
    assert torch.equal(drop_block2d(x, 0.0, 3), x)
    layer = DropBlock2d(0.5, 3).eval()
    assert torch.equal(layer(x), x)


def test_drop_block2d_generator_makes_results_reproducible():
    x = torch.randn(4, 3, 10, 10)
    a = drop_block2d(x, 0.3, 3, generator=torch.Generator().manual_seed(1))
    b = drop_block2d(x, 0.3, 3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


@pytest.mark.parametrize("shape", [(3, 8, 8), (2, 3, 8, 8, 1), (8, 8)])
def test_drop_block2d_rejects_input_that_is_not_4d(shape):
    with pytest.raises(ValueError, match=r"\bx\b"):
        drop_block2d(torch.ones(shape), 0.1, 3)


@pytest.mark.parametrize("block_size", [0, -2, 2.0, True])
def test_drop_block2d_rejects_bad_block_size(block_size):
    with pytest.raises(ValueError, match="block_size"):
        drop_block2d(torch.ones(1, 1, 8, 8), 0.1, block_size)
    with pytest.raises(ValueError, match="block_size"):
        DropBlock2d(0.1, block_size)


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan"), True])
def test_drop_block2d_rejects_p_outside_0_1(p):
    with pytest.raises(ValueError, match=r"\bp\b"):
        drop_block2d(torch.ones(1, 1, 8, 8), p, 3)
    with pytest.raises(ValueError, match=r"\bp\b"):
        DropBlock2d(p, 3)


def test_drop_block2d_extra_repr_shows_settings():
    assert "p=0.1, block_size=5" in repr(DropBlock2d(0.1, 5))


def test_drop_block2d_in_float16_rescales_without_overflow():
    torch.manual_seed(0)
    x = torch.ones(4, 8, 64, 64, dtype=torch.float16)  # more kept pixels than float16 can count
    out = drop_block2d(x, 0.1, 3)
    kept = out != 0
    assert 0.8 < kept.float().mean() < 0.95
    expected = x.numel() / int(kept.sum())
    assert torch.allclose(out[kept].float(), torch.tensor(expected), rtol=1e-3)


def test_drop_path_with_one_rate_per_example_drops_those_examples():
    out = drop_path(torch.ones(3, 4), torch.tensor([0.0, 1.0, 0.0]))
    assert torch.equal(out, torch.tensor([[1.0] * 4, [0.0] * 4, [1.0] * 4]))
    with pytest.raises(ValueError, match="one rate per example"):
        drop_path(torch.ones(3, 4), torch.tensor([0.0, 1.0]))


def test_gradient_with_respect_to_a_tensor_p_has_no_nan_where_p_is_1():
    p = torch.tensor([[0.0], [1.0]], requires_grad=True)
    dropout(torch.ones(2, 5), p).sum().backward()
    assert torch.isfinite(p.grad).all()


def test_drop_path_module_keeps_a_tensor_p_as_a_buffer():
    module = DropPath(torch.tensor(0.25))
    assert "p" in dict(module.named_buffers())
    assert "tensor of shape ()" in repr(module)


def test_drop_path_module_drops_whole_examples():
    torch.manual_seed(3)
    out = DropPath(0.5)(torch.ones(400, 8))
    rows = out.sum(dim=1)
    assert set(rows.unique().tolist()) <= {0.0, 16.0}
    assert 0 < int((rows == 0).sum()) < 400


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_inputs_drop_the_right_fraction(dtype):
    torch.manual_seed(4)
    n = 1_000_000
    for p in (0.1, 0.9):
        dropped = float((dropout(torch.ones(n, dtype=dtype), p) == 0).float().mean())
        assert abs(dropped - p) <= 5 * math.sqrt(p * (1 - p) / n)
    x = torch.ones(64, 16, 16, 16, dtype=dtype)
    low = float((drop_block2d(x, 0.1, 5) == 0).float().mean())
    full = float((drop_block2d(x.float(), 0.1, 5) == 0).float().mean())
    assert abs(low - full) < 0.01


def test_bad_inputs_to_the_layers_are_named():
    with pytest.raises(ValueError, match="floating-point"):
        dropout(torch.ones(3, dtype=torch.long), 0.5)
    with pytest.raises(ValueError, match="broadcasts to x"):
        dropout(torch.ones(3, 4), torch.tensor([0.1, 0.2]))
    with pytest.raises(ValueError, match="0-d"):
        drop_path(torch.tensor(1.0), 0.5)
    with pytest.raises(ValueError, match="generator"):
        dropout(torch.ones(3), 0.5, generator=5)


def test_modules_check_p_once_not_on_every_forward(monkeypatch):
    from regulab import layers

    modules = [
        Dropout(torch.tensor(0.5)),
        DropPath(torch.tensor(0.5)),
        ChannelDropout(torch.tensor(0.5)),
    ]

    def fail(p):
        raise AssertionError("p checked again in forward (a GPU sync for a tensor p)")

    monkeypatch.setattr(layers, "_check_p", fail)
    for module in modules:
        assert module(torch.ones(4, 3)).shape == (4, 3)


def test_drop_block2d_with_a_tensor_p_draws_as_a_float_one_and_differs_per_copy():
    x = torch.randn(4, 3, 9, 9)
    torch.manual_seed(5)
    want = drop_block2d(x, 0.3, 3)
    torch.manual_seed(5)
    assert torch.equal(drop_block2d(x, torch.tensor(0.3), 3), want)
    ps = torch.tensor([0.0, 0.1, 0.3])  # three stacked copies, the same draws
    torch.manual_seed(5)
    out = torch.func.vmap(lambda p: drop_block2d(x, p, 3), randomness="same")(ps)
    for k, p in enumerate(ps.tolist()):
        torch.manual_seed(5)
        torch.testing.assert_close(out[k], drop_block2d(x, torch.tensor(p), 3), rtol=0, atol=0)
    torch.testing.assert_close(out[0], x, rtol=1e-6, atol=0)  # p = 0: drew, dropped nothing
    assert (out[2] == 0).any()
    layer = DropBlock2d(torch.tensor(0.2), block_size=3)
    assert "p" in dict(layer.named_buffers()) and "block_size=3" in repr(layer)
    with pytest.raises(ValueError, match=r"p must be a number or a 0-d tensor; got shape \(2,\)"):
        drop_block2d(x, torch.tensor([0.1, 0.2]), 3)
