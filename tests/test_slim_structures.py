"""Slimming on the architectures people use, built here (no torchvision): grouped convolutions
(ResNeXt, RegNet X), depthwise ones (MobileNetV2), concatenation (DenseNet), squeeze-excitation,
channel shuffles and splits (ShuffleNetV2, CSP), ties in the scores; and real timm models.

The reference is the masked network (the planned channels' BatchNorm scale and shift zeroed),
which the pruned one must equal in eval mode.
"""

import copy
import math
import warnings

import pytest
import torch
from torch import nn

from regulab.slim.coupling import couplings
from regulab.slim.plan import plan
from regulab.slim.surgery import masked, prune

pytestmark = pytest.mark.usefixtures("one_thread")

X = torch.zeros(1, 3, 32, 32)
TOLERANCE = 1e-5  # largest |pruned - masked| output, as in tests/test_slim.py


def cbr(i, o, k=1, s=1, g=1, act=nn.ReLU):
    """Conv, BatchNorm and (unless act is None) an activation."""
    layers = [nn.Conv2d(i, o, k, s, k // 2, groups=g, bias=False), nn.BatchNorm2d(o)]
    return nn.Sequential(*layers, act()) if act else nn.Sequential(*layers)


def head(c, classes=10):
    return [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, classes)]


class Bottleneck(nn.Module):
    """ResNeXt / RegNet X block: 1x1, grouped 3x3 (with the stride), 1x1, projection shortcut."""

    def __init__(self, cin, cout, width, groups, stride=1):
        super().__init__()
        self.a = cbr(cin, width)
        self.b = cbr(width, width, 3, stride, groups)
        self.c = cbr(width, cout, act=None)
        same = stride == 1 and cin == cout
        self.short = nn.Identity() if same else cbr(cin, cout, 1, stride, act=None)

    def forward(self, x):
        return torch.relu(self.short(x) + self.c(self.b(self.a(x))))


def resnext():
    """32 groups of 4 channels (the 32x4d shape, small)."""
    return nn.Sequential(
        cbr(3, 32, 3), Bottleneck(32, 64, 128, 32), Bottleneck(64, 64, 128, 32), *head(64)
    )


def regnet_x():
    """Group width 8: 24 channels in 3 groups."""
    return nn.Sequential(
        cbr(3, 16, 3, 2), Bottleneck(16, 24, 24, 3, 2), Bottleneck(24, 24, 24, 3), *head(24)
    )


class InvertedResidual(nn.Module):
    """MobileNetV2: expand 1x1, depthwise 3x3, project 1x1 (no activation), residual."""

    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        h = cin * expand
        layers = [cbr(cin, h, act=nn.ReLU6)] if expand != 1 else []
        layers += [cbr(h, h, 3, stride, h, nn.ReLU6), cbr(h, cout, act=None)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


def mobilenet_v2():
    """MobileNetV2's shape with torchvision's initialization (scales 1, shifts 0)."""
    model = nn.Sequential(
        cbr(3, 16, 3, 2, act=nn.ReLU6),
        InvertedResidual(16, 8, 1, 1),
        InvertedResidual(8, 12, 2, 6),
        InvertedResidual(12, 12, 1, 6),
        cbr(12, 64, act=nn.ReLU6),
        *head(64),
    )
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
    return model


class DenseLayer(nn.Module):
    """DenseNet: BatchNorm, ReLU, 1x1, BatchNorm, ReLU, 3x3; the input and output joined."""

    def __init__(self, cin, growth):
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, 4 * growth, 1, bias=False),
            nn.BatchNorm2d(4 * growth), nn.ReLU(), nn.Conv2d(4 * growth, growth, 3, 1, 1),
        )  # fmt: skip

    def forward(self, x):
        return torch.cat([x, self.body(x)], 1)


def densenet():
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, 1, 1, bias=False),
        DenseLayer(16, 8),
        DenseLayer(24, 8),
        DenseLayer(32, 8),
        nn.BatchNorm2d(40),
        nn.ReLU(),
        *head(40),
    )


class SqueezeExcite(nn.Module):
    """timm/EfficientNet: mean, 1x1 reduce, ReLU, 1x1 expand, sigmoid gate."""

    def __init__(self, c, reduced):
        super().__init__()
        self.reduce = nn.Conv2d(c, reduced, 1)
        self.expand = nn.Conv2d(reduced, c, 1)

    def forward(self, x):
        gate = self.expand(torch.relu(self.reduce(x.mean((2, 3), keepdim=True))))
        return x * torch.sigmoid(gate)


class MBConv(nn.Module):
    """EfficientNet block: expand, depthwise, squeeze-excitation, project, residual."""

    def __init__(self, c, expand):
        super().__init__()
        h = c * expand
        self.body = nn.Sequential(
            cbr(c, h, act=nn.SiLU), cbr(h, h, 3, 1, h, nn.SiLU), SqueezeExcite(h, c // 4),
            cbr(h, c, act=None),
        )  # fmt: skip

    def forward(self, x):
        return x + self.body(x)


def squeeze_excite():
    return nn.Sequential(cbr(3, 16, 3), MBConv(16, 4), MBConv(16, 4), *head(16))


def channel_shuffle(x, groups):
    """torchvision's shufflenetv2.channel_shuffle."""
    b, c, h, w = x.size()
    x = x.view(b, groups, c // groups, h, w)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(b, c, h, w)


class ShuffleUnit(nn.Module):
    """torchvision's ShuffleNetV2 InvertedResidual: chunk (stride 1) or two branches, join,
    shuffle."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        half = cout // 2
        self.stride = stride
        self.branch1 = nn.Sequential()
        if stride > 1:
            self.branch1 = nn.Sequential(cbr(cin, cin, 3, stride, cin, None), cbr(cin, half))
        self.branch2 = nn.Sequential(
            cbr(cin if stride > 1 else half, half), cbr(half, half, 3, stride, half, None),
            cbr(half, half),
        )  # fmt: skip

    def forward(self, x):
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


def shufflenet_v2():
    return nn.Sequential(
        cbr(3, 8, 3, 2), ShuffleUnit(8, 16, 2), ShuffleUnit(16, 16, 1), cbr(16, 32), *head(32)
    )


class DarkBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = cbr(c, c // 2, act=nn.LeakyReLU)
        self.conv2 = cbr(c // 2, c, 3, act=nn.LeakyReLU)

    def forward(self, x):
        return x + self.conv2(self.conv1(x))


class CrossStage(nn.Module):
    """timm's cspnet.CrossStage: the expanded channels split in two by fixed sizes."""

    def __init__(self, cin, cout):
        super().__init__()
        self.expand_chs = 2 * cout
        self.conv_down = cbr(cin, cout, 3, 2, act=nn.LeakyReLU)
        self.conv_exp = cbr(cout, self.expand_chs, act=nn.LeakyReLU)
        self.blocks = nn.Sequential(DarkBlock(cout), DarkBlock(cout))
        self.conv_transition_b = cbr(cout, cout, act=nn.LeakyReLU)
        self.conv_transition = cbr(self.expand_chs, cout, act=nn.LeakyReLU)

    def forward(self, x):
        x = self.conv_exp(self.conv_down(x))
        xs, xb = x.split(self.expand_chs // 2, dim=1)
        xb = self.conv_transition_b(self.blocks(xb))
        return self.conv_transition(torch.cat([xs, xb], dim=1))


def csp():
    return nn.Sequential(cbr(3, 8, 3), CrossStage(8, 16), *head(16))


STRUCTURES = {
    "resnext": resnext,
    "regnet_x": regnet_x,
    "mobilenet_v2": mobilenet_v2,
    "densenet": densenet,
    "squeeze_excite": squeeze_excite,
    "shufflenet_v2": shufflenet_v2,
    "csp": csp,
}
HELD = {"shufflenet_v2", "csp"}  # groups Torch-Pruning cannot re-index are left whole


def randomized(model, seed=0):
    """Distinct BatchNorm scales, shifts and statistics (eval is then not trivial)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g) + 0.05)
                m.bias.copy_(torch.randn(n, generator=g) * 0.5)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
    return model.eval()


def build(name, seed=0):
    torch.manual_seed(seed)
    return randomized(STRUCTURES[name](), seed)


def quiet_plan(model, ratio, example=X, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return plan(model, ratio, example, **kwargs)


def assert_matches_masked(model, p, example=X):
    small = prune(model, p, example).eval()
    reference = masked(model, p, example).eval()
    x = torch.randn(8, *example.shape[1:])
    with torch.no_grad():
        assert (small(x) - reference(x)).abs().max() <= TOLERANCE
    return small


# --- every structure ------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(STRUCTURES))
@pytest.mark.parametrize("ratio", [0.3, 0.6])
def test_pruned_equals_masked_with_exact_counts_and_floors(name, ratio):
    model = build(name)
    state = copy.deepcopy(model.state_dict())
    p = quiet_plan(model, ratio, min_channels=2)
    assert p.units > 0 and p.requested == round(ratio * p.units)
    assert p.removed == p.requested  # no floor binds at these ratios
    assert sum(len(g.removed) // g.unit for g in p.groups) == p.removed
    for g in p.groups:
        assert len(g.removed) % g.unit == 0
        assert g.keep >= g.floor == 2
    small = assert_matches_masked(model, p)
    assert sum(t.numel() for t in small.parameters()) < sum(t.numel() for t in model.parameters())
    for k, v in model.state_dict().items():  # planning and pruning leave the model as it was
        assert torch.equal(v, state[k]), k
    assert any(g.held for g in p.groups) == (name in HELD)


# --- grouped convolutions -------------------------------------------------------------------


def test_grouped_convolutions_lose_the_same_positions_in_every_group():
    model = build("resnext")
    p = quiet_plan(model, 0.5)
    for block in ("1", "2"):
        for bn in (f"{block}.a.1", f"{block}.b.1"):  # either side of the grouped 3x3
            g = next(g for g in p.groups if g.layers[0] == bn)
            assert g.unit == 32 and g.channels == 128
            positions = {c % 4 for c in g.removed}
            assert g.removed == sorted(q + 4 * k for q in positions for k in range(32))
    small = assert_matches_masked(model, p)
    for block in ("1", "2"):
        conv = small.get_submodule(f"{block}.b.0")
        assert conv.groups == 32 and conv.in_channels % 32 == conv.out_channels % 32 == 0


def test_grouped_units_are_counted_once_and_scored_by_their_mean_scale():
    model = build("resnext")
    p = quiet_plan(model, 0.3)
    # stem 32 channels; block 1's output (its c and shortcut BatchNorms) and block 2's c are
    # one group of 64; each block's a and b BatchNorms: 128 channels in units of 32, 4 units
    assert p.units == 32 + 64 + 4 * 4
    gamma = model.get_submodule("1.a.1").weight.detach().abs()
    g = next(g for g in p.groups if g.layers[0] == "1.a.1")
    scores = [float(gamma[q::4].mean()) for q in range(4)]  # position q: channels q, q+4, ...
    assert g.removed and g.keep - g.unit >= g.floor  # not held back by its floor
    expected = [q for q in range(4) if scores[q] <= p.threshold]
    assert sorted({c % 4 for c in g.removed}) == expected


def test_floors_count_whole_units_where_groups_apply():
    model = build("regnet_x")  # 24 channels in 3 groups: units of 3
    p = quiet_plan(model, 0.9, min_channels=5)
    for g in p.groups:
        assert g.keep >= g.floor == 5
        assert g.keep >= math.ceil(5 / g.unit) * g.unit
    grouped = [g for g in p.groups if g.unit == 3]
    assert grouped and all(g.keep == 6 for g in grouped)  # 5 rounded up to whole units
    assert p.removed < p.requested and f"only {p.removed} of the {p.requested}" in p.note
    assert_matches_masked(model, p)


def test_depthwise_convolutions_keep_in_out_and_groups_equal():
    model = build("mobilenet_v2")
    p = quiet_plan(model, 0.5)
    small = assert_matches_masked(model, p)
    depthwise = [m for m in small.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert len(depthwise) == 3
    assert all(m.groups == m.in_channels == m.out_channels for m in depthwise)
    assert all(g.unit == 1 for g in p.groups)


def test_a_cycle_through_a_concatenation_and_a_residual_takes_both_channels_along():
    class Ghost(nn.Module):  # GhostNetV2's first block: [x1, cheap(x1)] added to its input
        def __init__(self):
            super().__init__()
            self.stem = cbr(3, 8, 3)
            self.primary = cbr(8, 4, act=None)
            self.cheap = cbr(4, 4, 3, 1, 4, None)
            self.fc = nn.Linear(8, 10)

        def forward(self, x):
            x = self.stem(x)
            x1 = self.primary(x)
            x = x + torch.cat([x1, self.cheap(x1)], 1)
            return self.fc(x.mean((2, 3)))

    torch.manual_seed(0)
    model = randomized(Ghost())
    (stem,) = [c for c in couplings(model, X) if c.members[0][0] == "stem.1"]
    # stem channel c reaches primary channel c, hence cheap channel c, hence stem channel c+4
    assert sorted(stem.units) == [[c, c + 4] for c in range(4)]
    p = quiet_plan(model, 0.5)
    assert_matches_masked(model, p)


# --- what Torch-Pruning cannot re-index -----------------------------------------------------


@pytest.mark.parametrize(
    ("name", "layer", "reason"),
    [
        ("shufflenet_v2", "1.branch1.1.1", "a view/reshape of the channels"),
        ("csp", "1.conv_exp.1", "a split or chunk of the channel dimension"),
        ("csp", "1.blocks.0.conv2.1", "a split or chunk of the channel dimension"),
    ],
)
def test_groups_through_a_shuffle_or_a_split_are_held_and_named(name, layer, reason):
    model = build(name)
    with pytest.warns(UserWarning, match=r"channels in \d+ of the \d+ groups are left unpruned"):
        p = plan(model, 0.5, X)
    g = next(g for g in p.groups if layer in g.layers)
    assert g.held.startswith(f"its channels pass through {reason}") and g.removed == []
    assert g.fixed == g.channels
    assert "held" in str(p) and "left unpruned" in p.note
    small = assert_matches_masked(model, p)
    assert small.get_submodule(layer).num_features == model.get_submodule(layer).num_features
    assert p.removed == p.requested > 0  # the other groups are pruned


class ShuffleOnly(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = cbr(3, 8, 3)
        self.b = cbr(8, 8, 3)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = channel_shuffle(self.b(channel_shuffle(self.a(x), 2)), 2)
        return self.fc(x.mean((2, 3)))


class Sliced(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = cbr(3, 8, 3)
        self.fc = nn.Linear(6, 10)

    def forward(self, x):
        return self.fc(self.a(x)[:, :6].mean((2, 3)))


@pytest.mark.parametrize(
    ("build_model", "reason"),
    [
        (ShuffleOnly, r"layer a\.1 \(and 1 more groups\): its channels pass through a "
                      r"view/reshape of the channels such as a channel shuffle"),
        (Sliced, r"layer a\.1: its channels pass through a slice of the channel dimension"),
    ],
)  # fmt: skip
def test_a_model_with_nothing_prunable_is_refused_in_one_line_before_anything_changes(
    build_model, reason
):
    torch.manual_seed(0)
    model = randomized(build_model())
    state = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match=f"nothing in {build_model.__name__} can be pruned: "):
        plan(model, 0.5, X)
    with pytest.raises(ValueError, match=reason) as caught:
        plan(model, 0.5, X)
    assert "\n" not in str(caught.value)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_layers_that_normalize_channels_together_are_held():
    class Normed(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = cbr(3, 8, 3)
            self.gn = nn.GroupNorm(2, 8)
            self.b = cbr(8, 8, 3)
            self.fc = nn.Linear(8, 10)

        def forward(self, x):
            return self.fc(self.b(self.gn(self.a(x))).mean((2, 3)))

    torch.manual_seed(0)
    model = randomized(Normed())
    with pytest.warns(UserWarning, match="normalized together by layer gn"):
        p = plan(model, 0.5, X)
    assert [g.layers[0] for g in p.groups if g.held] == ["a.1"]
    assert_matches_masked(model, p)


# --- ties -----------------------------------------------------------------------------------


def test_equal_scales_are_cut_in_proportion_with_a_warning_and_no_layer_dies():
    torch.manual_seed(0)
    model = mobilenet_v2().eval()  # a fresh initialization: every scale is 1
    with pytest.warns(UserWarning, match=r"(\d+) of the \1 channel scores tie at 1 .*sparsity"):
        p = plan(model, 0.5, X)
    assert p.removed == p.requested == round(0.5 * p.units)
    for g in p.groups:
        assert g.keep >= g.floor
        assert abs(len(g.removed) - 0.5 * g.channels) <= 1  # in proportion, not group order
    small = assert_matches_masked(model, p)
    with torch.no_grad():
        y = small(torch.randn(16, 3, 32, 32))
    assert y.abs().max() > 0 and y.std(0).max() > 1e-6  # neither zero nor constant


def test_distinct_scores_and_a_tie_at_zero_do_not_warn():
    model = build("resnext")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plan(model, 0.5, X)
        with torch.no_grad():  # sparsity training's result: many scales exactly zero
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.weight[::2] = 0
        p = plan(model, 0.3, X)
    assert p.threshold == 0


# --- real timm models -----------------------------------------------------------------------

TIMM = {  # name: a group held (Torch-Pruning cannot re-index it), or None
    "resnet18": None,
    "resnext26ts": None,
    "regnetx_002": None,
    "mobilenetv2_050": None,
    "cspdarknet53": "split or chunk",
}


@pytest.mark.parametrize("name", list(TIMM))
def test_timm_models_prune_to_their_masked_copy(name):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = randomized(timm.create_model(name, pretrained=False, num_classes=10))
    example = torch.zeros(1, 3, 64, 64)
    p = quiet_plan(model, 0.3, example)
    assert p.removed == p.requested == round(0.3 * p.units) > 0
    held = [g.held for g in p.groups if g.held]
    assert all(TIMM[name] in h for h in held) if TIMM[name] else held == []
    small = prune(model, p, example).eval()
    reference = masked(model, p, example).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a, b = small(x), reference(x)
    assert (a - b).abs().max() <= TOLERANCE * b.abs().max()
    if any(m.groups > 1 for m in model.modules() if isinstance(m, nn.Conv2d)):
        assert any(isinstance(m, nn.Conv2d) and m.groups > 1 for m in small.modules())


def test_an_error_inside_torch_pruning_is_one_line_naming_the_layer(monkeypatch):
    import torch_pruning as tp

    model = build("resnext")

    def broken(*args, **kwargs):
        raise ZeroDivisionError("integer division or modulo by zero")

    monkeypatch.setattr(tp.DependencyGraph, "get_pruning_group", broken)
    with pytest.raises(ValueError, match=r"channels of layer 0\.1 \(ZeroDivisionError: integ"):
        plan(model, 0.5, X)
    monkeypatch.setattr(tp.DependencyGraph, "build_dependency", broken)
    with pytest.raises(ValueError, match=r"cannot trace Sequential \(ZeroDivisionError") as e:
        plan(model, 0.5, X)
    assert "\n" not in str(e.value)


# --- an example_input the model does not take -------------------------------------------------


@pytest.mark.parametrize(
    ("example", "shown", "torch_says"),
    [
        (torch.zeros(1, 1, 32, 32), "a tensor of shape (1, 1, 32, 32)",
         "RuntimeError: Given groups=1, weight of size [32, 3, 3, 3], expected input[1, 1, 32, "
         "32] to have 3 channels, but got 1 channels instead"),
        ((X, X), "(a tensor of shape (1, 3, 32, 32), a tensor of shape (1, 3, 32, 32))",
         "TypeError: Sequential.forward() takes 2 positional arguments but 3 were given"),
    ],
)  # fmt: skip
def test_a_wrong_example_input_is_named_with_torchs_message(example, shown, torch_says):
    model = build("resnext")
    for call in (lambda: plan(model, 0.5, example), lambda: prune(model, quiet_plan(model, 0.5),
                                                                  example)):  # fmt: skip
        with pytest.raises(ValueError) as info:
            call()
        assert str(info.value) == (
            f"example_input must be an input Sequential takes (a batch of one is enough); got "
            f"{shown}, on which the model raised {torch_says}"
        )
