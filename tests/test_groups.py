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
