"""param_groups: which tensors decay, checked by name and through a real optimizer step."""

import pytest
import torch
from torch import nn

from regulab import describe_groups, param_groups


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.conv = nn.Conv2d(1, 3, 3)
        self.bn = nn.BatchNorm2d(3)
        self.gn = nn.GroupNorm(1, 3)
        self.ln = nn.LayerNorm([2, 2])  # a 2-D norm weight: excluded as a norm layer, not by ndim
        self.head = nn.Linear(12, 2)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


def names(groups, kind):
    return {n for g in groups if g["name"] == kind for n in g["names"]}


def test_matrices_decay_biases_norms_and_frozen_do_not():
    groups = param_groups(Net(), 0.1)
    assert names(groups, "decay") == {"embed.weight", "conv.weight", "head.weight"}
    assert names(groups, "no_decay") == {
        "conv.bias",
        "bn.weight",
        "bn.bias",
        "gn.weight",
        "gn.bias",
        "ln.weight",
        "ln.bias",
        "head.bias",
    }
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    assert [g["penalize"] for g in groups] == [True, False]


def test_wildcard_names_opt_out_of_decay():
    groups = param_groups(Net(), 0.1, no_decay=("embed.*",))
    assert names(groups, "decay") == {"conv.weight", "head.weight"}
    assert "embed.weight" in names(groups, "no_decay")
    single = param_groups(Net(), 0.1, no_decay="*.weight")
    assert [g["name"] for g in single] == ["no_decay"]  # empty groups are left out


def test_groups_drive_a_torch_optimizer_as_intended():
    model = Net()
    groups = param_groups(model, 0.5)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW(groups, lr=0.1)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # only the decay moves the weights
    opt.step()
    for n, p in model.named_parameters():
        if n in names(groups, "decay"):
            assert torch.allclose(p, before[n] * (1 - 0.1 * 0.5), atol=1e-7)
        else:
            assert torch.equal(p, before[n])


def test_sizes_are_reported():
    model = Net()
    groups = param_groups(model, 0.01)
    text = describe_groups(groups)
    decayed = 10 * 4 + 3 * 9 + 2 * 12
    assert f"decay: weight_decay=0.01, 3 tensors, {decayed:,} parameters" in text
    undecayed = 3 + 3 + 3 + 3 + 3 + 4 + 4 + 2
    assert f"no_decay: weight_decay=0, 8 tensors, {undecayed:,} parameters" in text


def test_shared_parameters_appear_once():
    a = nn.Linear(3, 3)
    model = nn.Sequential(a, nn.ReLU(), a)
    groups = param_groups(model, 0.1)
    assert sum(len(g["params"]) for g in groups) == 2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"weight_decay": 0.1, "no_decay": ("nothing.here",)}, "no_decay pattern 'nothing.here'"),
        ({"weight_decay": 0.1, "no_decay": (3,)}, "no_decay"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        param_groups(Net(), **kwargs)


def test_all_frozen_and_lazy_models_are_refused_clearly():
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        param_groups(frozen, 0.1)
    with pytest.raises(ValueError, match="forward pass"):
        param_groups(nn.LazyLinear(3), 0.1)


def test_a_two_dimensional_rms_norm_scale_is_not_decayed():
    model = nn.Sequential(nn.Linear(4, 4), nn.Unflatten(1, (2, 2)), nn.RMSNorm([2, 2]))
    groups = param_groups(model, 0.1)
    assert names(groups, "decay") == {"0.weight"}
    assert "2.weight" in names(groups, "no_decay")


def test_groups_mix_with_the_users_own_groups():
    body, head = nn.Linear(3, 3), nn.Linear(3, 1)
    opt = torch.optim.AdamW([*param_groups(body, 0.1), {"params": head.parameters()}])
    assert len(opt.param_groups) == 3


def test_no_decay_patterns_may_come_from_a_generator():
    groups = param_groups(Net(), 0.1, no_decay=(p for p in ["embed.*"]))
    assert "embed.weight" in names(groups, "no_decay")


# --- the model's own no_weight_decay() and the conventions of ViT, ConvNeXt, CaiT ---------------


class LayerScale(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), 1e-5))


class Attention(nn.Module):
    """XCA-like: a per-head temperature (heads, 1, 1) it declares itself, by its own name."""

    def __init__(self, dim, heads=2):
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))

    def no_weight_decay(self):
        return {"temperature"}


class TinyViT(nn.Module):
    def __init__(self, dim=8, tokens=5):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, 4, 4)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, dim))
        self.rel_bias = nn.Parameter(torch.zeros(4, 4))  # declared below, by its exact name
        self.rope = nn.Linear(dim, dim)  # declared below, as a prefix
        self.attn = Attention(dim)
        self.ls1 = LayerScale(dim)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 10)

    def no_weight_decay(self):
        return {"pos_embed", "cls_token", "rel_bias", "rope", "not_a_parameter"}


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim=8):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 1e-6))  # timm's ConvNeXt, CaiT's gamma_1
        self.layer_scale = nn.Parameter(torch.full((dim, 1, 1), 1e-6))  # torchvision's CNBlock
        self.gamma_mix = nn.Parameter(torch.ones(dim, dim))  # a matrix named gamma: decays


def reasons(groups):
    return next((g["reasons"] for g in groups if g["name"] == "no_decay"), {})


def test_no_weight_decay_names_are_exact_prefixes_or_relative_to_their_module():
    groups = param_groups(TinyViT(), 0.05)
    assert names(groups, "decay") == {
        "patch_embed.weight", "attn.qkv.weight", "head.weight"
    }  # fmt: skip
    why = reasons(groups)
    for name in ("pos_embed", "cls_token", "rel_bias", "rope.weight", "rope.bias"):
        assert why[name] == "no_weight_decay()", name
    assert why["attn.temperature"] == "no_weight_decay()"  # the submodule's own name
    assert why["ls1.gamma"] == "layer scale"
    assert why["norm.weight"] == "norm layer" and why["head.bias"] == "1-D"


def test_embeddings_are_kept_by_name_without_no_weight_decay():
    class Plain(TinyViT):
        no_weight_decay = None  # not callable: ignored

    groups = param_groups(Plain(), 0.05)
    why = reasons(groups)
    assert why["pos_embed"] == why["cls_token"] == "embedding"
    assert {"rel_bias", "rope.weight"} <= names(groups, "decay")
    assert why["attn.temperature"] == "no_weight_decay()"  # the submodule still declares it


def test_per_channel_layer_scales_are_kept_and_matrices_named_gamma_decay():
    groups = param_groups(ConvNeXtBlock(), 0.05)
    assert names(groups, "decay") == {
        "dwconv.weight", "pwconv1.weight", "pwconv2.weight", "gamma_mix"
    }  # fmt: skip
    assert reasons(groups)["gamma"] == reasons(groups)["layer_scale"] == "layer scale"


def test_conventions_false_is_ndim_and_norm_layers_only():
    groups = param_groups(TinyViT(), 0.05, conventions=False)
    assert {"pos_embed", "cls_token", "rel_bias", "rope.weight", "attn.temperature"} <= names(
        groups, "decay"
    )
    assert "layer_scale" in names(param_groups(ConvNeXtBlock(), 0.05, conventions=False), "decay")


def test_the_users_pattern_is_the_first_reason_and_describe_lists_the_reasons():
    groups = param_groups(TinyViT(), 0.05, no_decay=("pos_*",))
    assert reasons(groups)["pos_embed"] == "no_decay pattern"
    text = describe_groups(groups)
    assert text.splitlines()[2:] == [
        "  no_decay pattern: pos_embed",
        "  no_weight_decay(): cls_token, rel_bias, rope.weight, rope.bias, ... (5 tensors)",
        "  layer scale: ls1.gamma",
    ]


def test_a_bad_no_weight_decay_is_named():
    class Bad(TinyViT):
        def no_weight_decay(self):
            return "pos_embed"

    with pytest.raises(TypeError, match=r"model.no_weight_decay\(\) must return parameter names"):
        param_groups(Bad(), 0.05)


@pytest.mark.parametrize(
    "name", ["vit_tiny_patch16_224", "deit_tiny_distilled_patch16_224", "convnext_atto",
             "cait_xxs24_224"],
)  # fmt: skip
def test_timm_models_decay_what_timms_own_groups_decay(name):
    timm = pytest.importorskip("timm")
    from timm.optim import param_groups_weight_decay

    model = timm.create_model(name, pretrained=False)
    declared = getattr(model, "no_weight_decay", set)()  # as timm's create_optimizer_v2 reads it
    theirs = param_groups_weight_decay(model, 0.05, no_weight_decay_list=declared)
    decayed = {id(p) for g in theirs if g["weight_decay"] for p in g["params"]}
    ours = {id(p) for g in param_groups(model, 0.05) if g["penalize"] for p in g["params"]}
    assert ours == decayed
