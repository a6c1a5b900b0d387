"""Saving any pruned model without pickle: safetensors weights, the pruned shapes in arch.json,
and `load` rebuilding it from the unpruned model (an instance, a factory, or a regulab model
named in arch) with exactly the same outputs."""

import json
import pickle

import pytest
import torch
from torch import nn

from regulab import models
from regulab.slim import export
from regulab.slim.surgery import prune
from test_slim_structures import STRUCTURES, X, build, quiet_plan

pytestmark = pytest.mark.usefixtures("one_thread")


def assert_same(a: nn.Module, b: nn.Module, x: torch.Tensor) -> None:
    """Bit-identical outputs in eval mode and equal state dicts (buffers included)."""
    with torch.no_grad():
        assert torch.equal(a.eval()(x), b.eval()(x))
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture
def no_pickle(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("pickle was used")

    for module, name in ((torch, "load"), (pickle, "load"), (pickle, "loads")):
        monkeypatch.setattr(module, name, refuse)


@pytest.mark.parametrize("name", list(STRUCTURES))
def test_every_pruned_structure_round_trips_exactly(tmp_path, name, no_pickle):
    model = build(name)
    small = prune(model, quiet_plan(model, 0.5), X).eval()
    export.save(small, tmp_path, {"structure": name})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arch.json", "model.safetensors"]
    x = torch.randn(4, 3, 32, 32)
    assert_same(export.load(tmp_path, model=STRUCTURES[name]), small, x)  # a factory
    assert_same(export.load(tmp_path, model=STRUCTURES[name]()), small, x)  # an instance
    assert json.loads((tmp_path / "arch.json").read_text())["arch"] == {"structure": name}


def test_grouped_and_depthwise_convolutions_record_their_groups(tmp_path):
    for name in ("resnext", "mobilenet_v2"):
        model = build(name)
        small = prune(model, quiet_plan(model, 0.5), X)
        export.save(small, tmp_path / name)
        layers = json.loads((tmp_path / name / "arch.json").read_text())["layers"]
        for n, m in small.named_modules():
            if isinstance(m, nn.Conv2d) and m.groups > 1:
                shape = (m.in_channels, m.out_channels, m.groups)
                assert (
                    layers[n]["in_channels"],
                    layers[n]["out_channels"],
                    layers[n]["groups"],
                ) == shape
    assert layers["2.body.1.0"]["groups"] == small.get_submodule("2.body.1.0").out_channels < 48


class UserNet(nn.Module):
    """A user's own model: 2-D, transposed and 1-D convolutions, every kind of norm, PReLU."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.act = nn.PReLU(16)
        self.up = nn.ConvTranspose2d(16, 12, 2, stride=2)
        self.bn2 = nn.BatchNorm2d(12)
        self.seq = nn.Conv1d(12, 10, 3, padding=1)
        self.gn = nn.GroupNorm(5, 10)
        self.inorm = nn.InstanceNorm1d(10, affine=True)
        self.fc1 = nn.Linear(10, 8)
        self.ln = nn.LayerNorm(8)
        self.fc2 = nn.Linear(8, 5)

    def forward(self, x):
        h = self.act(self.bn(self.conv(x)))
        h = torch.relu(self.bn2(self.up(h))).flatten(2)  # (batch, channels, positions)
        h = self.inorm(self.gn(self.seq(h)))
        return self.fc2(self.ln(self.fc1(h.mean(2))))


def pruned_user_net():
    """UserNet slimmed by regulab (its BatchNorm groups), then cut further with Torch-Pruning
    itself where no BatchNorm ranks the channels (GroupNorm, InstanceNorm, LayerNorm)."""
    import torch_pruning as tp

    torch.manual_seed(0)
    model = UserNet().eval()
    with torch.no_grad():
        for m in (model.bn, model.bn2):
            m.weight.uniform_(0.1, 1)
            m.running_var.uniform_(0.5, 1.5)
    example = torch.zeros(1, 3, 8, 8)
    small = prune(model, quiet_plan(model, 0.5, example), example).eval()
    graph = tp.DependencyGraph().build_dependency(small, example_inputs=example)
    for layer, fn, idxs in (
        (small.seq, tp.prune_conv_out_channels, [1, 3, 5, 7, 9]),  # one of each GroupNorm pair
        (small.fc1, tp.prune_linear_out_channels, [0, 3]),
    ):
        graph.get_pruning_group(layer, fn, idxs=idxs).prune()
    return small


def test_a_users_model_with_every_kind_of_layer_round_trips_exactly(tmp_path, no_pickle):
    small = pruned_user_net()
    assert small.bn.num_features < 16 and small.up.out_channels < 12
    assert (small.gn.num_groups, small.gn.num_channels, small.ln.normalized_shape) == (5, 5, (6,))
    export.save(small, tmp_path)
    layers = json.loads((tmp_path / "arch.json").read_text())["layers"]
    assert layers["gn"] == {"type": "GroupNorm", "num_groups": 5, "num_channels": 5}
    assert layers["ln"] == {"type": "LayerNorm", "normalized_shape": [6]}
    assert layers["inorm"] == {"type": "InstanceNorm1d", "num_features": 5}
    assert layers["act"] == {"type": "PReLU", "num_parameters": small.bn.num_features}
    assert layers["up"]["type"] == "ConvTranspose2d" and layers["seq"]["type"] == "Conv1d"
    loaded = export.load(tmp_path, model=UserNet)
    assert_same(loaded, small, torch.randn(4, 3, 8, 8))
    # resized tensors own their memory: a safetensors buffer can be unaligned, and oneDNN
    # then takes another kernel that sums in another order (1e-13 off on timm efficientnet_b0)
    assert all(t.data_ptr() % 64 == 0 for t in loaded.state_dict().values() if t.numel())
    assert loaded.gn.num_channels == 5 and loaded.ln.normalized_shape == (6,)
    assert not loaded.training


@pytest.mark.parametrize(
    ("name", "kwargs", "example"),
    [
        ("vgg_bn", {"cfg": [8, "M", 16, "M"], "in_channels": 1, "num_classes": 10}, (1, 28, 28)),
        ("resnet_bn", {"widths": [4, 8], "blocks": [1, 1], "in_channels": 1}, (1, 28, 28)),
        ("mlp", {"sizes": [6, 5, 3]}, (6,)),
    ],
)
def test_regulab_models_are_rebuilt_from_arch_alone(tmp_path, name, kwargs, example):
    torch.manual_seed(0)
    model = models.MODELS[name](**kwargs).eval()
    x = torch.randn(2, *example)
    if name != "mlp":  # (an MLP has no BatchNorm to slim: saved as it is)
        model = prune(model, quiet_plan(model, 0.5, x[:1]), x[:1]).eval()
    export.save(model, tmp_path, {"name": name, "kwargs": kwargs})
    assert_same(export.load(tmp_path), model, x)


def test_an_arch_json_written_before_arch_was_stored_as_given_still_loads(tmp_path):
    kwargs = {"cfg": [8, "M", 16, "M"], "in_channels": 1, "num_classes": 10}
    torch.manual_seed(0)
    model = models.vgg_bn(**kwargs).eval()
    x = torch.randn(2, 1, 28, 28)
    small = prune(model, quiet_plan(model, 0.5, x[:1]), x[:1]).eval()
    export.save(small, tmp_path, {"name": "vgg_bn", "kwargs": kwargs})
    old = {"name": "vgg_bn", "kwargs": kwargs, "layers": {}}  # the former layout
    for n, m in small.named_modules():
        if isinstance(m, nn.Conv2d):
            old["layers"][n] = {"type": "Conv2d", "in": m.in_channels, "out": m.out_channels}
        elif isinstance(m, nn.Linear):
            old["layers"][n] = {"type": "Linear", "in": m.in_features, "out": m.out_features}
        elif isinstance(m, nn.BatchNorm2d):
            old["layers"][n] = {"type": "BatchNorm2d", "out": m.num_features}
    (tmp_path / "arch.json").write_text(json.dumps(old))
    assert_same(export.load(tmp_path), small, x)


class Scaled(nn.Module):
    """A layer type load cannot resize: a per-channel scale of its own."""

    def __init__(self, c):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(c))

    def forward(self, x):
        return x * self.scale.view(1, -1, 1, 1)


def test_load_refuses_what_it_cannot_rebuild_in_one_line(tmp_path):
    model = build("resnext")
    small = prune(model, quiet_plan(model, 0.5), X)
    export.save(small, tmp_path / "a")
    errors = [
        (ValueError, r"arch None names no regulab model .* pass model=", {}),
        (TypeError, r"model must be an nn.Module or a zero-argument callable .*; got str", {
            "model": "resnext"}),
        (TypeError, r"returning one; got int from the callable", {"model": lambda: 3}),
        (ValueError, r"the saved layer 1\.a\.0 \(Conv2d\) is not in the Sequential given",
         {"model": STRUCTURES["mobilenet_v2"]}),
    ]  # fmt: skip
    for kind, message, kwargs in errors:
        with pytest.raises(kind, match=message) as caught:
            export.load(tmp_path / "a", **kwargs)
        assert "\n" not in str(caught.value)
    net = nn.Sequential(nn.Conv2d(3, 4, 1), Scaled(4))
    with torch.no_grad():
        net[1].scale = nn.Parameter(torch.ones(3))  # as if pruned by something else
        net[0] = nn.Conv2d(3, 3, 1)
    export.save(net, tmp_path / "b")
    fresh = nn.Sequential(nn.Conv2d(3, 4, 1), Scaled(4))
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(ValueError, match=r"layer 1 \(Scaled\) has scale of shape \(3,\) saved"):
        export.load(tmp_path / "b", model=fresh)
    after = fresh.state_dict()  # refused before anything was changed
    assert fresh[0].out_channels == 4 and all(torch.equal(after[k], v) for k, v in before.items())


def test_save_refuses_an_arch_that_is_not_json(tmp_path):
    for arch, message in (("vgg", "a dict or None; got str"), ({"f": print}, "JSON values")):
        with pytest.raises(TypeError, match=message):
            export.save(nn.Linear(2, 2), tmp_path / "x", arch)
    assert not (tmp_path / "x").exists()  # refused before anything is written


def test_timm_models_round_trip_from_a_factory(tmp_path):
    timm = pytest.importorskip("timm")
    from test_slim_structures import randomized

    def factory():
        return timm.create_model("mobilenetv2_050", pretrained=False, num_classes=10)

    torch.manual_seed(0)
    model = randomized(factory())
    example = torch.zeros(1, 3, 64, 64)
    small = prune(model, quiet_plan(model, 0.3, example), example).eval()
    export.save(small, tmp_path, {"timm": "mobilenetv2_050"})
    assert_same(export.load(tmp_path, model=factory), small, torch.randn(2, 3, 64, 64))
