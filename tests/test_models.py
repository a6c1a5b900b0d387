"""Reference models: shapes, parameter counts, layer placement, torch references.

References are independent of the code under test: parameter counts written out
by hand, nets assembled here from torch layers, and a residual block computed
with torch.nn.functional. Random layers are checked for placement and rate here
(their statistics are tested in test_layers.py) and for being the identity in eval().
"""

import itertools
import re

import pytest
import torch
import torch.fx
from torch import nn
from torch.nn import functional as F

from regulab import models
from regulab.layers import DropBlock2d, Dropout, DropPath
from regulab.models import MODELS, linear, mlp, resnet_bn, symbolic_trace, vgg_bn

ATOL = 1e-6  # float32 comparisons of the same arithmetic done by two nets
INPUTS = [(1, 28), (3, 32)]  # (channels, side): Fashion-MNIST and CIFAR images


def images(n, channels, side, seed=0):
    return torch.randn(n, channels, side, side, generator=torch.Generator().manual_seed(seed))


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def weighted(model):
    """The modules of model that hold parameters or statistics, in order."""
    kinds = (nn.Linear, nn.Conv2d, nn.BatchNorm2d)
    return [m for m in model.modules() if isinstance(m, kinds)]


def copy_weights(src, dst):
    """Copy weights and BatchNorm statistics from src to dst, module by module in order."""
    pairs = list(zip(weighted(src), weighted(dst), strict=True))
    for a, b in pairs:
        assert type(a) is type(b)
        b.load_state_dict(a.state_dict())


def randomize_batch_norm(model, seed=0):
    """Give every BatchNorm non-trivial weights and running statistics (eval then matters)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.weight.data = torch.rand(c, generator=g) + 0.5
            m.bias.data = torch.randn(c, generator=g)
            m.running_mean = torch.randn(c, generator=g)
            m.running_var = torch.rand(c, generator=g) + 0.5
    return model


def all_factories(channels, side):
    """One unregularized and one regularized net of each kind for (channels, side) images."""
    d = channels * side * side
    return {
        "linear": linear(d, 10),
        "mlp": mlp((d, 64, 32, 10)),
        "mlp_dropout": mlp((d, 64, 32, 10), dropout=(0.2, 0.5)),
        "vgg_bn": vgg_bn(in_channels=channels),
        "vgg_bn_regularized": vgg_bn(in_channels=channels, dropout=0.5, drop_block=0.1),
        "resnet_bn": resnet_bn(in_channels=channels),
        "resnet_bn_drop_path": resnet_bn(in_channels=channels, drop_path=0.2),
    }


# --------------------------------------------------------------------------- all models


@pytest.mark.parametrize(("channels", "side"), INPUTS)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_every_model_maps_images_to_one_row_of_logits_per_example(channels, side, mode):
    for name, model in all_factories(channels, side).items():
        model.train(mode == "train")
        out = model(images(4, channels, side))
        assert out.shape == (4, 10), name
        assert torch.isfinite(out).all(), name


def test_models_maps_names_to_the_factories():
    expected = {"linear": linear, "mlp": mlp, "vgg_bn": vgg_bn, "resnet_bn": resnet_bn}
    assert expected == MODELS


@pytest.mark.parametrize(("channels", "side"), INPUTS)
def test_gradients_reach_every_parameter(channels, side):
    torch.manual_seed(0)
    for name, model in all_factories(channels, side).items():
        model.train()
        x = images(8, channels, side)
        target = torch.randint(0, 10, (8,), generator=torch.Generator().manual_seed(1))
        F.cross_entropy(model(x), target).backward()
        for pname, p in model.named_parameters():
            assert p.grad is not None, f"{name}: {pname}"
            assert torch.isfinite(p.grad).all(), f"{name}: {pname}"
            assert p.grad.abs().sum() > 0, f"{name}: {pname}"


def test_batch_norm_starts_at_weight_one_bias_zero():
    for model in (vgg_bn(), resnet_bn()):
        bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        assert bns
        for bn in bns:
            assert torch.equal(bn.weight, torch.ones_like(bn.weight))
            assert torch.equal(bn.bias, torch.zeros_like(bn.bias))


# --------------------------------------------------------------------------- linear


def test_linear_is_x_times_w_transposed_plus_b_with_one_output_for_regression():
    model = linear(5)
    x = torch.randn(7, 5)
    w, b = model[1].weight, model[1].bias
    assert w.shape == (1, 5)
    torch.testing.assert_close(model(x), x @ w.T + b, atol=ATOL, rtol=0)
    assert n_params(model) == 5 + 1


def test_linear_flattens_images():
    model = linear(3 * 32 * 32, 10)
    x = images(4, 3, 32)
    w, b = model[1].weight, model[1].bias
    torch.testing.assert_close(model(x), x.reshape(4, -1) @ w.T + b, atol=ATOL, rtol=0)


# --------------------------------------------------------------------------- mlp


def test_mlp_784_256_256_10_has_269_322_parameters():
    # (784 * 256 + 256) + (256 * 256 + 256) + (256 * 10 + 10)
    assert n_params(mlp((784, 256, 256, 10))) == 269_322
    assert n_params(mlp((784, 256, 256, 10), dropout=0.5)) == 269_322


@pytest.mark.parametrize("sizes", [(5, 3), (20, 7, 3), (784, 100, 50, 25, 10)])
def test_mlp_parameter_count_is_sum_of_weights_and_biases(sizes):
    expected = sum(a * b + b for a, b in itertools.pairwise(sizes))
    assert n_params(mlp(sizes)) == expected


@pytest.mark.parametrize(
    ("activation", "torch_activation"), [("relu", nn.ReLU), ("gelu", nn.GELU), ("tanh", nn.Tanh)]
)
def test_mlp_equals_the_same_net_built_from_torch_layers(activation, torch_activation):
    torch.manual_seed(0)
    model = mlp((784, 256, 256, 10), dropout=(0.2, 0.5), activation=activation).eval()
    reference = nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 256),
        torch_activation(),
        nn.Dropout(0.2),
        nn.Linear(256, 256),
        torch_activation(),
        nn.Dropout(0.5),
        nn.Linear(256, 10),
    ).eval()
    reference.load_state_dict(model.state_dict())  # same layers at the same positions
    x = images(16, 1, 28)
    torch.testing.assert_close(model(x), reference(x), atol=ATOL, rtol=0)


def test_mlp_without_dropout_holds_only_flatten_linear_and_activations():
    kinds = [type(m) for m in mlp((784, 256, 256, 10), dropout=0.0)]
    assert kinds == [nn.Flatten, nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
    assert [type(m) for m in mlp((784, 10), dropout=0)] == [nn.Flatten, nn.Linear]
    kinds = [type(m) for m in mlp((784, 256, 256, 10), dropout=(0.0, 0.3))]
    assert kinds == [nn.Flatten, nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, Dropout, nn.Linear]


def test_mlp_dropout_follows_each_hidden_activation_with_its_own_rate():
    model = mlp((784, 256, 256, 10), dropout=(0.2, 0.5), activation="gelu")
    kinds = [type(m) for m in model]
    assert kinds == [
        nn.Flatten,
        nn.Linear,
        nn.GELU,
        Dropout,
        nn.Linear,
        nn.GELU,
        Dropout,
        nn.Linear,
    ]
    assert [model[3].p, model[6].p] == [0.2, 0.5]
    same = mlp((784, 256, 256, 10), dropout=0.3)
    assert [m.p for m in same if isinstance(m, Dropout)] == [0.3, 0.3]


def test_mlp_dropout_varies_in_training_and_eval_equals_the_net_without_dropout():
    torch.manual_seed(0)
    model = mlp((784, 256, 256, 10), dropout=(0.2, 0.5))
    plain = mlp((784, 256, 256, 10))
    copy_weights(model, plain)
    x = images(16, 1, 28)

    model.train()
    assert not torch.equal(model(x), model(x))
    assert not torch.allclose(model(x), plain(x), atol=1e-3)

    model.eval()
    torch.testing.assert_close(model(x), model(x), atol=0, rtol=0)
    torch.testing.assert_close(model(x), plain(x), atol=ATOL, rtol=0)


# --------------------------------------------------------------------------- vgg_bn


def vgg_param_count(cfg, in_channels, num_classes):
    """3x3 convolutions without bias, BatchNorm weight and bias, final Linear."""
    total, c_in = 0, in_channels
    for c in cfg:
        if c != "M":
            total += 9 * c_in * c + 2 * c
            c_in = c
    return total + c_in * num_classes + num_classes


def test_vgg_bn_parameter_count():
    # 3x3 convs 1->32->64->128 (no bias) + BatchNorm (2 per channel) + Linear(128, 10)
    expected = 9 * (1 * 32 + 32 * 64 + 64 * 128) + 2 * (32 + 64 + 128) + 128 * 10 + 10
    assert expected == 94_186
    assert n_params(vgg_bn()) == expected
    cfg = (16, 16, "M", 48, "M", 96, 96, "M")
    assert n_params(vgg_bn(cfg, in_channels=3, num_classes=100, dropout=0.5, drop_block=0.1)) == (
        vgg_param_count(cfg, 3, 100)
    )


@pytest.mark.parametrize(
    "cfg", [(32, "M", 64, "M", 128, "M"), (16, 16, "M", 32, "M", "M", 64, 64), (8,)]
)
def test_vgg_bn_has_one_batch_norm_per_convolution_with_matching_channels(cfg):
    features = list(vgg_bn(cfg, in_channels=3).features)
    convs = [i for i, m in enumerate(features) if isinstance(m, nn.Conv2d)]
    assert len(convs) == sum(c != "M" for c in cfg)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in features) == len(convs)
    assert sum(isinstance(m, nn.MaxPool2d) for m in features) == cfg.count("M")
    channels = 3
    for i, c in zip(convs, [c for c in cfg if c != "M"], strict=True):
        conv, bn, relu = features[i : i + 3]
        assert (conv.in_channels, conv.out_channels) == (channels, c)
        assert conv.kernel_size == (3, 3) and conv.padding == (1, 1) and conv.bias is None
        assert isinstance(bn, nn.BatchNorm2d) and bn.num_features == c
        assert isinstance(relu, nn.ReLU)
        channels = c


def test_vgg_bn_exposes_features_and_classifier():
    model = vgg_bn(dropout=0.5)
    assert isinstance(model.features, nn.Sequential)
    assert isinstance(model.classifier, nn.Sequential)
    assert [type(m) for m in model.classifier] == [nn.Flatten, Dropout, nn.Linear]
    assert model.classifier[1].p == 0.5
    assert model.classifier[2].in_features == 128
    assert [type(m) for m in vgg_bn().classifier] == [nn.Flatten, nn.Linear]


@pytest.mark.parametrize(
    ("cfg", "dropped"),
    [
        ((32, "M", 64, "M", 128, "M"), [64, 128]),
        ((16, 16, "M", 32, 32, "M", 64, 64, "M"), [32, 32, 64, 64]),
        ((16, "M", 32, "M", "M", 64), [32, 64]),  # two pools in a row end one stage
        ((16, 32), [16, 32]),  # one stage: all of it
    ],
)
def test_vgg_bn_drop_block_follows_the_relus_of_the_last_two_stages(cfg, dropped):
    features = list(vgg_bn(cfg, drop_block=0.1, drop_block_size=2).features)
    blocks = [i for i, m in enumerate(features) if isinstance(m, DropBlock2d)]
    assert [features[i - 3].out_channels for i in blocks] == dropped
    for i in blocks:
        assert isinstance(features[i - 1], nn.ReLU)
        assert (features[i].p, features[i].block_size) == (0.1, 2)
    assert not any(isinstance(m, DropBlock2d) for m in vgg_bn(cfg).features)


def test_vgg_bn_random_layers_vary_in_training_and_eval_equals_the_plain_net():
    torch.manual_seed(0)
    model = randomize_batch_norm(vgg_bn(in_channels=3, dropout=0.5, drop_block=0.2))
    plain = vgg_bn(in_channels=3)
    x = images(8, 3, 32)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    copy_weights(model, plain)  # after training, which moved the BatchNorm statistics
    plain.eval()
    torch.testing.assert_close(model(x), plain(x), atol=ATOL, rtol=0)


def test_vgg_bn_equals_the_same_net_built_from_torch_layers():
    torch.manual_seed(0)
    model = randomize_batch_norm(vgg_bn((8, "M", 16), in_channels=3, num_classes=4)).eval()
    reference = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 4),
    ).eval()
    copy_weights(model, reference)
    x = images(4, 3, 32)
    torch.testing.assert_close(model(x), reference(x), atol=ATOL, rtol=0)


def test_vgg_bn_pools_at_most_floor_log2_side_times():
    # documented limit: 4 pools for 28x28 (28, 14, 7, 3, 1), 5 for 32x32
    four, five = (8, "M") * 4, (8, "M") * 5
    assert vgg_bn(four)(images(2, 1, 28)).shape == (2, 10)
    assert vgg_bn(five)(images(2, 1, 32)).shape == (2, 10)
    with pytest.raises(RuntimeError):
        vgg_bn(five)(images(2, 1, 28))


# --------------------------------------------------------------------------- resnet_bn


def resnet_param_count(widths, blocks, in_channels, num_classes):
    """Stem, BasicBlocks (two 3x3 convs and BNs, 1x1 conv + BN projection when the
    shape changes) and the final Linear, counted by hand."""
    total = 9 * in_channels * widths[0] + 2 * widths[0]
    c_in = widths[0]
    for k, (w, n) in enumerate(zip(widths, blocks, strict=True)):
        for b in range(n):
            total += 9 * c_in * w + 9 * w * w + 4 * w
            if c_in != w or (k > 0 and b == 0):
                total += c_in * w + 2 * w
            c_in = w
    return total + c_in * num_classes + num_classes


def test_resnet_bn_parameter_count():
    # stem 9*16 + 32; stage1: 2 * (2*9*16*16 + 64); stage2: (9*16*32 + 9*32*32 + 128)
    # + projection (16*32 + 64) + (2*9*32*32 + 128); stage3 likewise at 64; Linear 64*10 + 10
    expected = (
        (144 + 32)
        + 2 * (2 * 2304 + 64)
        + (4608 + 9216 + 128 + 512 + 64 + 2 * 9216 + 128)
        + (18432 + 36864 + 256 + 2048 + 128 + 2 * 36864 + 256)
        + 650
    )
    assert expected == 174_970
    assert n_params(resnet_bn()) == expected
    assert n_params(resnet_bn(drop_path=0.3)) == expected
    args = ((8, 8, 24), (1, 3, 2), 3, 100)
    assert n_params(resnet_bn(*args)) == resnet_param_count(*args)


def blocks_of(model):
    return [m for m in model.modules() if isinstance(m, models.BasicBlock)]


@pytest.mark.parametrize(
    ("widths", "blocks", "projected"),
    [
        ((16, 32, 64), (2, 2, 2), [False, False, True, False, True, False]),
        ((16, 16), (1, 2), [False, True, False]),  # stride 2 alone changes the shape
        ((8,), (3,), [False, False, False]),  # the stem already has widths[0] channels
    ],
)
def test_resnet_bn_projects_the_shortcut_exactly_where_the_shape_changes(widths, blocks, projected):
    model = resnet_bn(widths, blocks)
    found = []
    for k, stage_blocks in enumerate(blocks):
        stage = getattr(model, f"stage{k + 1}")
        assert len(stage) == stage_blocks
        for b, block in enumerate(stage):
            stride = 2 if k > 0 and b == 0 else 1
            assert block.residual.conv1.stride == (stride, stride)
            assert block.residual.conv2.stride == (1, 1)
            if isinstance(block.shortcut, nn.Identity):
                found.append(False)
                continue
            found.append(True)
            conv, bn = block.shortcut.conv, block.shortcut.bn
            assert conv.kernel_size == (1, 1) and conv.stride == (stride, stride)
            assert conv.bias is None and bn.num_features == conv.out_channels == widths[k]
    assert found == projected


def test_resnet_bn_block_is_relu_of_residual_plus_shortcut():
    """A block against torch.nn.functional, in eval mode with non-trivial BN statistics."""
    torch.manual_seed(0)
    model = randomize_batch_norm(resnet_bn((4, 8), (1, 1), in_channels=3)).eval()

    def bn(x, m):
        return F.batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)

    x = images(4, 3, 32)
    stem = model.stem
    h = F.relu(bn(F.conv2d(x, stem[0].weight, padding=1), stem[1]))
    for block, stride in [(model.stage1[0], 1), (model.stage2[0], 2)]:
        r = block.residual
        branch = F.relu(bn(F.conv2d(h, r.conv1.weight, stride=stride, padding=1), r.bn1))
        branch = bn(F.conv2d(branch, r.conv2.weight, padding=1), r.bn2)
        if stride == 1:
            shortcut = h
        else:
            shortcut = bn(F.conv2d(h, block.shortcut.conv.weight, stride=2), block.shortcut.bn)
        h = F.relu(branch + shortcut)
    expected = h.mean((2, 3)) @ model.classifier[1].weight.T + model.classifier[1].bias
    torch.testing.assert_close(model(x), expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize(("blocks", "drop_path"), [((2, 2, 2), 0.2), ((1, 3, 1), 0.5), ((1,), 0.1)])
def test_resnet_bn_drop_path_rises_linearly_to_its_value_at_the_last_block(blocks, drop_path):
    model = resnet_bn((8,) * len(blocks), blocks, drop_path=drop_path)
    rates = [b.drop_path.p for b in blocks_of(model)]
    assert all(isinstance(b.drop_path, DropPath) for b in blocks_of(model))
    total = sum(blocks)
    # Huang et al.: block i of L (from 1) drops with probability i / L * drop_path
    assert rates == pytest.approx([drop_path * i / total for i in range(1, total + 1)], abs=1e-12)
    assert rates[-1] == drop_path


def test_resnet_bn_drop_path_drops_the_residual_branch_not_the_shortcut():
    torch.manual_seed(0)
    model = randomize_batch_norm(resnet_bn((8, 16), (1, 1), drop_path=0.5)).train()
    x = torch.relu(images(4, 8, 28))
    for block in blocks_of(model):
        block.drop_path.p = 1.0  # always dropped: the block is relu(shortcut(x))
        expected = torch.relu(block.shortcut(x))
        torch.testing.assert_close(block(x), expected, atol=0, rtol=0)
        assert not torch.allclose(expected, torch.relu(block.residual(x)), atol=1e-3)
        x = block(x)


def test_resnet_bn_without_drop_path_has_no_drop_path_layer():
    model = resnet_bn()
    assert all(isinstance(b.drop_path, nn.Identity) for b in blocks_of(model))
    assert not any(isinstance(m, DropPath) for m in model.modules())


def test_resnet_bn_drop_path_varies_in_training_and_eval_equals_the_plain_net():
    torch.manual_seed(0)
    model = randomize_batch_norm(resnet_bn(in_channels=3, drop_path=0.5))
    plain = resnet_bn(in_channels=3)
    plain.load_state_dict(model.state_dict())
    x = images(8, 3, 32)
    model.train()
    plain.train()
    assert not torch.equal(model(x), model(x))
    assert not torch.allclose(model(x), plain(x), atol=1e-3)
    model.eval()
    plain.eval()
    plain.load_state_dict(model.state_dict())  # training moved the BatchNorm statistics
    torch.testing.assert_close(model(x), model(x), atol=0, rtol=0)
    torch.testing.assert_close(model(x), plain(x), atol=ATOL, rtol=0)


# --------------------------------------------------------------------------- torch.fx


@pytest.mark.parametrize("factory", [vgg_bn, resnet_bn])
def test_torch_fx_traces_the_unregularized_convolutional_nets(factory):
    model = randomize_batch_norm(factory(in_channels=3)).eval()
    traced = torch.fx.symbolic_trace(model)
    called = {n.target for n in traced.graph.nodes if n.op == "call_module"}
    convs = {name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert convs <= called
    x = images(4, 3, 32)
    torch.testing.assert_close(traced(x), model(x), atol=0, rtol=0)


@pytest.mark.parametrize(
    "model",
    [
        vgg_bn(in_channels=3, dropout=0.5, drop_block=0.1),
        resnet_bn(in_channels=3, drop_path=0.2),
        mlp((3 * 32 * 32, 16, 10), dropout=0.5),
    ],
    ids=["vgg_bn", "resnet_bn", "mlp"],
)
def test_symbolic_trace_keeps_the_random_layers_as_leaves(model):
    model = randomize_batch_norm(model)
    traced = symbolic_trace(model)
    random = {n for n, m in model.named_modules() if isinstance(m, Dropout | DropBlock2d)}
    assert random
    assert random <= {n.target for n in traced.graph.nodes if n.op == "call_module"}
    x = images(4, 3, 32)
    traced.train()
    assert not torch.equal(traced(x), traced(x))
    model.eval()
    traced.eval()
    torch.testing.assert_close(traced(x), model(x), atol=0, rtol=0)


def test_symbolic_trace_rejects_a_non_module():
    with pytest.raises(ValueError, match=r"^model must be an nn.Module; got function"):
        symbolic_trace(linear)


# --------------------------------------------------------------------------- bad arguments


BAD = [
    (linear, {"in_features": 0}, "in_features"),
    (linear, {"in_features": 4, "out_features": 1.0}, "out_features"),
    (mlp, {"sizes": (784,)}, "sizes"),
    (mlp, {"sizes": 784}, "sizes"),
    (mlp, {"sizes": (784, 0, 10)}, "sizes[1]"),
    (mlp, {"sizes": (784, 256, 10), "dropout": -0.1}, "dropout"),
    (mlp, {"sizes": (784, 256, 10), "dropout": 1.0}, "dropout"),
    (mlp, {"sizes": (784, 256, 10), "dropout": float("nan")}, "dropout"),
    (mlp, {"sizes": (784, 256, 10), "dropout": "0.5"}, "dropout"),
    (mlp, {"sizes": (784, 256, 256, 10), "dropout": (0.2,)}, "dropout"),
    (mlp, {"sizes": (784, 256, 256, 10), "dropout": (0.2, 0.5, 0.5)}, "dropout"),
    (mlp, {"sizes": (784, 256, 256, 10), "dropout": (0.2, 1.5)}, "dropout[1]"),
    (mlp, {"sizes": (784, 10), "dropout": 0.5}, "dropout"),
    (mlp, {"sizes": (784, 256, 10), "activation": "sigmoid"}, "activation"),
    (mlp, {"sizes": (784, 256, 10), "activation": nn.ReLU}, "activation"),
    (vgg_bn, {"cfg": (32, "m", 64)}, "cfg[1]"),
    (vgg_bn, {"cfg": (32, 0)}, "cfg[1]"),
    (vgg_bn, {"cfg": (32, 64.0)}, "cfg[1]"),
    (vgg_bn, {"cfg": ("M",)}, "cfg"),
    (vgg_bn, {"cfg": ()}, "cfg"),
    (vgg_bn, {"cfg": "32M"}, "cfg"),
    (vgg_bn, {"in_channels": 0}, "in_channels"),
    (vgg_bn, {"num_classes": -1}, "num_classes"),
    (vgg_bn, {"dropout": 1.0}, "dropout"),
    (vgg_bn, {"drop_block": -0.5}, "drop_block"),
    (vgg_bn, {"drop_block": 0.1, "drop_block_size": 0}, "drop_block_size"),
    (resnet_bn, {"widths": (16, 32), "blocks": (2, 2, 2)}, "widths and blocks"),
    (resnet_bn, {"widths": (16, 32, 64), "blocks": (2, 2)}, "widths and blocks"),
    (resnet_bn, {"widths": ()}, "widths"),
    (resnet_bn, {"widths": (16, 0, 64)}, "widths[1]"),
    (resnet_bn, {"blocks": (2, True, 2)}, "blocks[1]"),
    (resnet_bn, {"drop_path": 1.0}, "drop_path"),
    (resnet_bn, {"in_channels": 2.5}, "in_channels"),
]


@pytest.mark.parametrize(("factory", "kwargs", "name"), BAD)
def test_bad_arguments_raise_value_error_naming_the_parameter(factory, kwargs, name):
    with pytest.raises(ValueError, match="^" + re.escape(name) + " must") as info:
        factory(**kwargs)
    assert "got" in str(info.value)
