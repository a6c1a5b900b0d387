"""Network slimming, first part: sparsity on BatchNorm scales, the plan, surgery vs masking."""

import copy
import json

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from regulab import models
from regulab.bn_sparsity import bn_scales, gamma_histogram, prox_bn_, sparsity_penalty
from regulab.slim.plan import dependency_groups, plan
from regulab.slim.surgery import masked, prune

pytestmark = pytest.mark.usefixtures("one_thread")

EXAMPLE = torch.zeros(2, 1, 28, 28)


def randomized(model, seed=0):
    """BatchNorm scales, shifts and running statistics drawn at random (eval is not trivial)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=g))
                m.bias.copy_(torch.randn(m.num_features, generator=g))
                m.running_mean.copy_(torch.randn(m.num_features, generator=g))
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def vgg():
    torch.manual_seed(0)
    return randomized(models.vgg_bn([8, "M", 16, "M", 32, "M"], in_channels=1, num_classes=10))


def resnet():
    torch.manual_seed(0)
    return randomized(models.resnet_bn([8, 16], [2, 2], in_channels=1, num_classes=10))


# --- sparsity -------------------------------------------------------------------------------


def test_sparsity_penalty_is_the_gradient_of_s_times_the_l1_norm_of_the_scales():
    model = vgg().train()
    x, y = torch.randn(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    s = 1e-2
    reference = copy.deepcopy(model)
    loss = F.cross_entropy(reference(x), y) + s * sum(g.abs().sum() for g in bn_scales(reference))
    loss.backward()
    F.cross_entropy(model(x), y).backward()
    sparsity_penalty(model, s).apply_()
    for a, b in zip(model.parameters(), reference.parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, atol=1e-7)


def test_proximal_step_soft_thresholds_the_scales_only():
    model = vgg()
    before = copy.deepcopy(model)
    prox_bn_(model, 0.3)
    for a, b in zip(bn_scales(model), bn_scales(before), strict=True):
        assert torch.equal(a, F.softshrink(b, 0.3))
        assert (a == 0).any()
    conv = model.features[0].weight
    assert torch.equal(conv, before.features[0].weight)


def test_gamma_histogram_matches_numpy():
    model = vgg()
    hist = gamma_histogram(model, bins=7)
    gammas = np.concatenate([g.detach().abs().numpy() for g in bn_scales(model)])
    counts, edges = np.histogram(gammas, bins=7, range=(0, gammas.max()))
    assert hist["counts"] == counts.tolist()
    assert np.allclose(hist["edges"], edges)


def test_a_model_without_batchnorm_is_named():
    with pytest.raises(ValueError, match="BatchNorm"):
        sparsity_penalty(models.mlp([4, 3, 2]), 1e-4)
    with pytest.raises(ValueError, match="BatchNorm"):
        plan(models.mlp([784, 3, 2]), 0.5, EXAMPLE)


# --- plan -----------------------------------------------------------------------------------


@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.3, 0.5, 0.7, 0.9])
def test_plan_removes_exactly_round_ratio_times_the_channels(ratio):
    for model in (vgg(), resnet()):
        p = plan(model, ratio, EXAMPLE)
        assert p.requested == round(ratio * p.units)
        assert p.removed == p.requested == sum(len(g.removed) for g in p.groups)
        assert all(g.keep >= 1 for g in p.groups)


def test_vgg_plan_removes_the_globally_smallest_scales():
    model = vgg()
    p = plan(model, 0.5, EXAMPLE)
    gammas = sorted(
        (float(m.weight[c].detach().abs()), name, c)
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.BatchNorm2d)
        for c in range(m.num_features)
    )
    expected = {(name, c) for _, name, c in gammas[: p.requested]}
    got = {(g.layers[0], c) for g in p.groups for c in g.removed}
    assert got == expected
    assert p.threshold == pytest.approx(gammas[p.requested - 1][0])


def test_floors_are_kept_and_an_impossible_ratio_says_by_how_much():
    model = vgg()
    p = plan(model, 0.9, EXAMPLE, min_channels=4)
    assert all(g.keep >= 4 for g in p.groups)
    capacity = sum(g.channels - 4 for g in p.groups)
    assert p.removed == min(capacity, p.requested)
    p = plan(model, 0.9, EXAMPLE, max_layer_ratio=0.5)
    assert all(g.keep >= g.channels / 2 for g in p.groups)
    assert p.removed == sum(g.channels // 2 for g in p.groups) < p.requested
    assert f"only {p.removed} of the {p.requested}" in p.note
    assert "requested" in str(p)


def test_coupled_residual_channels_are_one_group_scored_by_their_largest_scale():
    model = resnet()
    groups = dependency_groups(model, EXAMPLE)
    stem = next(g for g in groups if g[0][0] == "stem.1")
    names = {name for name, _ in stem}
    # the stem's output is added to both stage-1 blocks' outputs: their second BatchNorms
    assert names == {"stem.1", "stage1.0.residual.bn2", "stage1.1.residual.bn2"}
    p = plan(model, 0.5, EXAMPLE)
    g = next(g for g in p.groups if g.layers[0] == "stem.1")
    modules = dict(model.named_modules())
    scores = torch.stack([modules[n].weight.detach().abs() for n in names]).max(0).values
    assert g.removed and g.keep > g.floor  # not held back by its floor here
    # exactly the channels whose largest coupled scale is at or below the global threshold
    assert g.removed == [c for c in range(g.channels) if float(scores[c]) <= p.threshold]


def test_normalized_score_differs_and_bad_settings_are_named():
    model = vgg()
    with torch.no_grad():
        model.features[1].weight.mul_(10)  # one layer with large scales
    raw = plan(model, 0.5, EXAMPLE)
    norm = plan(model, 0.5, EXAMPLE, score="normalized")
    assert raw.groups[0].removed == [] and norm.groups[0].removed
    for ratio in (-0.1, 1.0, 1.5, float("nan"), "0.5", True):
        with pytest.raises(ValueError, match="ratio"):
            plan(model, ratio, EXAMPLE)
    with pytest.raises(ValueError, match="score"):
        plan(model, 0.5, EXAMPLE, score="l2")
    with pytest.raises(ValueError, match="max_layer_ratio"):
        plan(model, 0.5, EXAMPLE, max_layer_ratio=0)


# --- surgery --------------------------------------------------------------------------------


@pytest.mark.parametrize("build", [vgg, resnet])
@pytest.mark.parametrize("ratio", [0.3, 0.7])
def test_pruned_network_equals_the_masked_one_in_eval_mode(build, ratio):
    model = build()
    state = copy.deepcopy(model.state_dict())
    p = plan(model, ratio, EXAMPLE)
    small = prune(model, p, EXAMPLE).eval()
    reference = masked(model, p, EXAMPLE).eval()
    x = torch.randn(16, 1, 28, 28)
    with torch.no_grad():
        assert (small(x) - reference(x)).abs().max() <= 1e-5
    assert sum(t.numel() for t in small.parameters()) < sum(t.numel() for t in model.parameters())
    for k, v in model.state_dict().items():  # the original is untouched, statistics included
        assert torch.equal(v, state[k]), k


def test_pruned_batchnorm_keeps_the_running_statistics_of_the_kept_channels():
    model = vgg()
    p = plan(model, 0.5, EXAMPLE)
    small = prune(model, p, EXAMPLE)
    g = p.groups[1]
    kept = [c for c in range(g.channels) if c not in g.removed]
    before, after = model.get_submodule(g.layers[0]), small.get_submodule(g.layers[0])
    assert after.num_features == len(kept)
    assert torch.equal(after.running_mean, before.running_mean[kept])
    assert torch.equal(after.running_var, before.running_var[kept])
    assert torch.equal(after.weight, before.weight[kept])


def test_a_plan_for_another_model_is_refused():
    p = plan(vgg(), 0.5, EXAMPLE)
    other = randomized(models.vgg_bn([6, "M", 16, "M", 32, "M"], in_channels=1, num_classes=10))
    with pytest.raises(ValueError, match="channels"):
        prune(other, p, EXAMPLE)


# --- measurement and export -----------------------------------------------------------------


def test_flops_count_two_per_multiply_add_of_convolutions_and_linear_layers():
    from regulab.slim.measure import flops, measure, parameters

    model = models.vgg_bn([8, "M", 16, "M"], in_channels=1, num_classes=10)
    macs = 28 * 28 * 8 * 1 * 9 + 14 * 14 * 16 * 8 * 9 + 16 * 10  # conv, conv, classifier
    assert flops(model, EXAMPLE) == 2 * macs
    assert parameters(model) == sum(p.numel() for p in model.parameters())
    result = measure(model, EXAMPLE, batches=(1, 4), repeats=3)
    assert result["macs"] == macs and set(result["latency_s"]) == {1, 4}
    assert all(t > 0 for t in result["latency_s"].values())
    assert model.training  # measuring leaves the mode as it was


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("vgg_bn", {"cfg": [8, "M", 16, "M", 32, "M"], "in_channels": 1, "num_classes": 10}),
        ("resnet_bn", {"widths": [8, 16], "blocks": [2, 2], "in_channels": 1, "num_classes": 10}),
    ],
)
def test_export_round_trip_gives_the_same_outputs_without_pickle(tmp_path, name, kwargs):
    from regulab.slim import export
    from regulab.slim.measure import flops

    torch.manual_seed(0)
    model = randomized(models.MODELS[name](**kwargs))
    small = prune(model, plan(model, 0.5, EXAMPLE), EXAMPLE).eval()
    export.save(small, tmp_path / "slim", {"name": name, "kwargs": kwargs})
    assert sorted(p.name for p in (tmp_path / "slim").iterdir()) == [
        "arch.json",
        "model.safetensors",
    ]
    loaded = export.load(tmp_path / "slim")
    x = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(x), small(x))
    assert flops(loaded, EXAMPLE) == flops(small, EXAMPLE) < flops(model, EXAMPLE)


def test_export_keeps_any_arch_and_load_asks_for_the_model_it_cannot_build(tmp_path):
    from regulab.slim import export

    model = vgg()
    export.save(model, tmp_path, {"name": "alexnet", "source": "my notes"})
    assert json.loads((tmp_path / "arch.json").read_text())["arch"] == {
        "name": "alexnet",
        "source": "my notes",
    }
    with pytest.raises(ValueError, match=r"names no regulab model .* pass model="):
        export.load(tmp_path)
    loaded = export.load(tmp_path, model=vgg)  # a zero-argument factory
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


# --- recipes --------------------------------------------------------------------------------


def test_recipe_sparsity_reaches_fit_as_penalty_or_proximal_step():
    from regulab import recipe as recipes
    from regulab.recipe import build

    base = {
        "data": {"name": "digits"},
        "model": {"name": "vgg_bn", "cfg": [4, "M"]},
        "penalty": {"l2": 1e-3},
        "optim": {"lr": 0.5},
    }
    recipe = recipes.from_dict({**base, "slim": {"sparsity": 0.1}})
    splits = build.load_data(recipe, 0)
    parts = build.run_parts(recipe, splits, 0)
    model = parts["model"]
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    parts["penalty"].apply_()
    bn = model.features[1]
    assert torch.equal(bn.weight.grad, 0.1 * bn.weight.sign())
    conv = model.features[0].weight
    assert torch.allclose(conv.grad, 1e-3 * conv)  # the weights' L2 is still there
    assert bn.bias.grad.abs().sum() == 0  # shifts are not penalized
    recipe = recipes.from_dict({**base, "slim": {"sparsity": 0.1, "sparsity_mode": "proximal"}})
    parts = build.run_parts(recipe, splits, 0)
    bn = parts["model"].features[1]
    before = bn.weight.detach().clone()
    for fn in parts["after_step"]:
        fn()
    assert torch.equal(bn.weight, F.softshrink(before, 0.5 * 0.1))


def test_recipe_sparsity_needs_batchnorm():
    from regulab import recipe as recipes

    with pytest.raises(recipes.RecipeError, match=r"slim\.sparsity"):
        recipes.from_dict({"data": {"name": "digits"}, "slim": {"sparsity": 1e-4}})
    with pytest.raises(recipes.RecipeError, match=r"slim\.sparsity_mode"):
        recipes.from_dict({"model": {"name": "vgg_bn"}, "slim": {"sparsity_mode": "hard"}})
