"""Batched augmentations: brute-force references over offsets/centres, statistics, seeding."""

import math

import pytest
import torch

from regulab.augment import AUGMENTATIONS, cutout, gaussian_noise, hflip, random_crop


def distinct_images(n, c=2, h=6, w=6, dtype=torch.float64):
    """A batch whose every element is distinct and nonzero (so padding zeros stand out)."""
    return torch.arange(1, n * c * h * w + 1, dtype=dtype).reshape(n, c, h, w)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def crop_offsets(x, out, pad):
    """For each example (and each channel), the offsets (dy, dx) whose crop equals `out`.

    Returns a bool tensor (N, C, 2*pad+1, 2*pad+1); the reference pads by slicing.
    """
    n, c, h, w = x.shape
    padded = torch.zeros(n, c, h + 2 * pad, w + 2 * pad, dtype=x.dtype)
    padded[:, :, pad : pad + h, pad : pad + w] = x
    k = 2 * pad + 1
    match = torch.zeros(n, c, k, k, dtype=torch.bool)
    for dy in range(k):
        for dx in range(k):
            crop = padded[:, :, dy : dy + h, dx : dx + w]
            match[:, :, dy, dx] = (out == crop).all(-1).all(-1)
    return match


def cutout_reference_masks(h, w, size):
    """All holes cutout may make: one (H, W) mask per centre, built pixel by pixel."""
    masks = torch.zeros(h * w, h, w, dtype=torch.bool)
    for cy in range(h):
        for cx in range(w):
            top, left = cy - size // 2, cx - size // 2
            for r in range(h):
                for col in range(w):
                    if top <= r < top + size and left <= col < left + size:
                        masks[cy * w + cx, r, col] = True
    return masks


# --- random_crop ----------------------------------------------------------------


@pytest.mark.parametrize("pad", [1, 2, 4])
def test_random_crop_is_a_crop_of_the_zero_padded_input(pad):
    x = distinct_images(300)
    out = random_crop(x, pad, generator=gen(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    match = crop_offsets(x, out, pad).all(1)  # one offset valid for all channels at once
    assert (match.flatten(1).sum(1) == 1).all()  # exactly one offset per example


def test_random_crop_channels_share_the_offset():
    x = distinct_images(300, c=3)
    out = random_crop(x, 2, generator=gen(1))
    match = crop_offsets(x, out, 2).flatten(2)  # (N, C, 25), each channel checked alone
    assert (match.sum(-1) == 1).all()
    offset = match.float().argmax(-1)  # (N, C)
    assert (offset == offset[:, :1]).all()


def test_random_crop_offsets_cover_all_values_uniformly():
    pad, n = 2, 10_000
    x = distinct_images(n, c=1)
    out = random_crop(x, pad, generator=gen(2))
    match = crop_offsets(x, out, pad)[:, 0].flatten(1)  # (N, 25)
    assert (match.sum(1) == 1).all()
    counts = match.sum(0).double()
    cells = (2 * pad + 1) ** 2
    expected = n / cells
    assert (counts > 0).all()
    # each count within 5 binomial sigmas of n / 25
    sigma = math.sqrt(n * (1 / cells) * (1 - 1 / cells))
    assert ((counts - expected).abs() <= 5 * sigma).all(), counts
    # Pearson chi-square with 24 degrees of freedom (mean 24, sd ~6.9); 60 is far in the tail
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 60, chi2


def test_random_crop_pad_zero_is_identity():
    x = distinct_images(5)
    assert torch.equal(random_crop(x, 0, generator=gen(0)), x)


def test_random_crop_same_seed_same_output_other_seed_differs():
    x = distinct_images(50)
    a = random_crop(x, 3, generator=gen(7))
    b = random_crop(x, 3, generator=gen(7))
    c = random_crop(x, 3, generator=gen(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_random_crop_keeps_integer_dtype():
    x = distinct_images(20, dtype=torch.int64)
    out = random_crop(x, 1, generator=gen(0))
    assert out.dtype == torch.int64
    assert (crop_offsets(x, out, 1).all(1).flatten(1).sum(1) == 1).all()


# --- hflip ----------------------------------------------------------------------


def flipped_and_unchanged(x, out):
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    unchanged = (out == x).flatten(1).all(1)
    return flipped, unchanged


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_hflip_each_example_is_flipped_or_unchanged_at_rate_p(p):
    n = 20_000
    x = distinct_images(n, c=2, h=3, w=4)
    out = hflip(x, p, generator=gen(3))
    flipped, unchanged = flipped_and_unchanged(x, out)
    assert (flipped ^ unchanged).all()  # exactly one of the two, never a mix
    rate = flipped.double().mean().item()
    assert abs(rate - p) <= 5 * math.sqrt(p * (1 - p) / n), rate


@pytest.mark.parametrize(("p", "all_flipped"), [(0.0, False), (1.0, True)])
def test_hflip_extremes(p, all_flipped):
    x = distinct_images(500, h=2, w=3)
    flipped, unchanged = flipped_and_unchanged(x, hflip(x, p, generator=gen(0)))
    assert flipped.all() if all_flipped else unchanged.all()


def test_hflip_same_seed_same_output():
    x = distinct_images(64)
    assert torch.equal(hflip(x, generator=gen(5)), hflip(x, generator=gen(5)))
    assert not torch.equal(hflip(x, generator=gen(5)), hflip(x, generator=gen(6)))


# --- gaussian_noise -------------------------------------------------------------


@pytest.mark.parametrize("std", [0.1, 1.0, 3.0])
def test_gaussian_noise_has_mean_zero_and_the_given_std(std):
    g = gen(4)
    x = torch.randn(100, 3, 32, 32, generator=g, dtype=torch.float64)  # n = 307,200
    noise = gaussian_noise(x, std, generator=g) - x
    n = noise.numel()
    assert abs(noise.mean().item()) <= 5 * std / math.sqrt(n)
    # sample std has standard error ~ std / sqrt(2n)
    assert abs(noise.std().item() - std) <= 5 * std / math.sqrt(2 * n)
    # and the shape is Gaussian: P(|z| < 1) = erf(1/sqrt(2)) ~ 0.6827
    inside = (noise.abs() < std).double().mean().item()
    p1 = math.erf(1 / math.sqrt(2))
    assert abs(inside - p1) <= 5 * math.sqrt(p1 * (1 - p1) / n)


def test_gaussian_noise_keeps_dtype_and_same_seed_reproduces():
    x = torch.zeros(4, 1, 5, 5, dtype=torch.float32)
    a = gaussian_noise(x, 0.5, generator=gen(9))
    assert a.dtype == torch.float32
    assert torch.equal(a, gaussian_noise(x, 0.5, generator=gen(9)))
    assert not torch.equal(a, gaussian_noise(x, 0.5, generator=gen(10)))


def test_gaussian_noise_std_zero_is_identity():
    x = torch.randn(3, 2, 4, 4, generator=gen(0))
    assert torch.equal(gaussian_noise(x, 0.0, generator=gen(0)), x)


def test_gaussian_noise_rejects_integer_tensor():
    with pytest.raises(ValueError, match="x must be a floating-point tensor"):
        gaussian_noise(torch.ones(2, 1, 3, 3, dtype=torch.int64), 0.1)


# --- cutout ---------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 3, 4, 8, 11])
def test_cutout_hole_is_a_clipped_square_at_some_centre(size):
    n, c, h, w = 2000, 3, 8, 7
    x = torch.ones(n, c, h, w)
    out = cutout(x, size, generator=gen(11))
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    holes = out == 0  # (N, C, H, W)
    assert (holes == holes[:, :1]).all()  # channels share the hole
    masks = cutout_reference_masks(h, w, size)  # (H*W, H, W)
    same = (holes[:, 0, None] == masks[None]).flatten(2).all(-1)  # (N, H*W)
    assert same.any(1).all()
    zeros = holes[:, 0].flatten(1).sum(1)
    assert (zeros >= 1).all() and (zeros <= size * size).all()


def test_cutout_centres_cover_the_image_uniformly():
    n, h, w, size = 6400, 8, 8, 3  # size 3 on 8 x 8: each centre gives a different hole
    out = cutout(torch.ones(n, 1, h, w), size, generator=gen(12))
    masks = cutout_reference_masks(h, w, size)
    same = ((out[:, 0, None] == 0) == masks[None]).flatten(2).all(-1)  # (N, 64)
    assert (same.sum(1) == 1).all()
    counts = same.sum(0).double()
    expected = n / (h * w)
    assert (counts > 0).all()
    # Pearson chi-square with 63 degrees of freedom (mean 63, sd ~11.2); 120 is far in the tail
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 120, chi2


def test_cutout_leaves_other_pixels_untouched():
    x = distinct_images(100, c=2, h=6, w=6)
    out = cutout(x, 3, generator=gen(13))
    hole = out == 0
    assert torch.equal(out[~hole], x[~hole])


def test_cutout_same_seed_same_output():
    x = torch.ones(64, 2, 8, 8)
    a = cutout(x, 4, generator=gen(14))
    assert torch.equal(a, cutout(x, 4, generator=gen(14)))
    assert not torch.equal(a, cutout(x, 4, generator=gen(15)))


# --- randomness comes from the generator -----------------------------------------

CALLS = {
    "random_crop": lambda x, g: random_crop(x, 2, generator=g),
    "hflip": lambda x, g: hflip(x, 0.5, generator=g),
    "gaussian_noise": lambda x, g: gaussian_noise(x, 0.3, generator=g),
    "cutout": lambda x, g: cutout(x, 3, generator=g),
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_a_given_generator_leaves_the_global_rng_alone(name):
    x = distinct_images(16)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    CALLS[name](x, gen(0))
    assert torch.equal(torch.get_rng_state(), before)
    CALLS[name](x, None)  # without a generator the global RNG is used (the check can fail)
    assert not torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize("name", sorted(CALLS))
def test_without_generator_global_seed_reproduces(name):
    x = distinct_images(16)
    torch.manual_seed(5)
    a = CALLS[name](x, None)
    torch.manual_seed(5)
    assert torch.equal(a, CALLS[name](x, None))


def test_augmentations_dict_maps_names_to_functions():
    expected = {
        "random_crop": random_crop,
        "hflip": hflip,
        "gaussian_noise": gaussian_noise,
        "cutout": cutout,
    }
    assert expected == AUGMENTATIONS


# --- bad input ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["random_crop", "hflip", "cutout"])
def test_image_functions_reject_a_3d_tensor(name):
    with pytest.raises(ValueError, match=r"x must be a batch of images.*\(3, 8, 8\)"):
        CALLS[name](torch.ones(3, 8, 8), gen(0))


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda x: random_crop(x, -1), r"pad.*got -1"),
        (lambda x: random_crop(x, 1.5), r"pad.*got 1\.5"),
        (lambda x: cutout(x, 0), r"size.*got 0"),
        (lambda x: cutout(x, -2), r"size.*got -2"),
        (lambda x: hflip(x, 1.5), r"p must.*got 1\.5"),
        (lambda x: hflip(x, -0.1), r"p must.*got -0\.1"),
        (lambda x: gaussian_noise(x, -1.0), r"std.*got -1\.0"),
        (lambda x: gaussian_noise(x, math.inf), r"std.*got inf"),
    ],
)
def test_bad_settings_raise_value_error_naming_the_parameter(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call(torch.ones(2, 1, 4, 4))
