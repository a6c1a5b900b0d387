"""Reference models: a linear model, an MLP, and small VGG and ResNet nets with BatchNorm.

Each factory validates its arguments and returns a plain `nn.Module` built from
torch layers and the regularization layers of `regulab.layers`:

* `linear`: Flatten → Linear (linear or logistic regression, softmax regression).
* `mlp`: Flatten → [Linear → activation → Dropout] per hidden layer → Linear; the
  d2l "dropout from scratch" net is `mlp((784, 256, 256, 10), dropout=(0.2, 0.5))`.
* `vgg_bn`: a small VGG with a BatchNorm after every convolution, the setting of
  Network Slimming (Liu et al., arXiv:1708.06519), with optional DropBlock
  (Ghiasi et al., arXiv:1810.12890) and dropout before the last layer.
* `resnet_bn`: a small CIFAR-style ResNet of BasicBlocks (He et al.,
  arXiv:1512.03385) with optional stochastic depth (Huang et al., arXiv:1603.09382).

A rate of 0 adds no module at all, so an unregularized net holds only torch layers.
Weights keep PyTorch's default initialization (Linear and Conv2d weights and
biases uniform in ±1/sqrt(fan_in); BatchNorm weight 1, bias 0). The nets take
(N, C, H, W) images; the convolutional ones end in a global average pool, so
28x28 (Fashion-MNIST) and 32x32 (CIFAR) inputs both work. Forward passes have
no data-dependent control flow: `torch.fx.symbolic_trace` traces unregularized
nets; `symbolic_trace` below also traces nets holding regulab's random layers,
which it keeps as leaves.
`MODELS` maps names to factories for the command line.
"""

from collections import OrderedDict
from numbers import Real

import torch
from torch import nn

from regulab import _checks
from regulab.layers import DropBlock2d, Dropout, DropPath

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


def _rate(name: str, value) -> float:
    """Return value as a float if it is a number in [0, 1), else raise ValueError."""
    if isinstance(value, bool) or not isinstance(value, Real) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a number in [0, 1) (0 turns it off); got {value!r}")
    return float(value)


def _positive_ints(name: str, values, min_len: int = 1) -> tuple[int, ...]:
    """Return values as a tuple if it is a list or tuple of >= min_len positive integers."""
    if not isinstance(values, list | tuple) or len(values) < min_len:
        raise ValueError(
            f"{name} must be a list or tuple of at least {min_len} positive integers; "
            f"got {values!r}"
        )
    for i, v in enumerate(values):
        _checks.positive_int(f"{name}[{i}]", v)
    return tuple(values)


def linear(in_features: int, out_features: int = 1) -> nn.Sequential:
    """Flatten → Linear(in_features, out_features): inputs (N, ...) with in_features
    elements per example give (N, out_features), so (N, 1) for regression."""
    _checks.positive_int("in_features", in_features)
    _checks.positive_int("out_features", out_features)
    return nn.Sequential(nn.Flatten(), nn.Linear(in_features, out_features))


def mlp(sizes, dropout=0.0, activation: str = "relu") -> nn.Sequential:
    """Flatten → [Linear → activation → Dropout] per hidden layer → Linear.

    sizes = (inputs, hidden..., outputs), e.g. (784, 256, 256, 10). dropout is a
    drop probability in [0, 1) after every hidden layer, or a list with one per
    hidden layer (len(sizes) - 2 entries); 0 leaves the Dropout module out.
    activation is one of ACTIVATIONS ("relu", "gelu", "tanh").
    """
    sizes = _positive_ints("sizes", sizes, min_len=2)
    hidden = len(sizes) - 2
    if isinstance(dropout, list | tuple):
        if len(dropout) != hidden:
            raise ValueError(
                f"dropout must be one number or a list with one rate per hidden layer "
                f"({hidden} for sizes {sizes}); got {len(dropout)} rates: {list(dropout)!r}"
            )
        rates = [_rate(f"dropout[{i}]", p) for i, p in enumerate(dropout)]
    else:
        rates = [_rate("dropout", dropout)] * hidden
        if not hidden and dropout != 0:
            raise ValueError(
                f"dropout must be 0 when sizes has no hidden layer (dropout acts after "
                f"hidden layers); got dropout={dropout!r} with sizes {sizes}"
            )
    _checks.one_of("activation", activation, tuple(ACTIVATIONS))
    layers = [nn.Flatten()]
    for i, p in enumerate(rates):
        layers += [nn.Linear(sizes[i], sizes[i + 1]), ACTIVATIONS[activation]()]
        if p > 0:
            layers.append(Dropout(p))
    layers.append(nn.Linear(sizes[-2], sizes[-1]))
    return nn.Sequential(*layers)


def vgg_bn(
    cfg=(32, "M", 64, "M", 128, "M"),
    in_channels: int = 1,
    num_classes: int = 10,
    dropout: float = 0.0,
    drop_block: float = 0.0,
    drop_block_size: int = 3,
) -> nn.Sequential:
    """A small VGG with BatchNorm: Sequential(features, pool, classifier).

    features: for each int c in cfg, Conv2d(3x3, padding 1, no bias) → BatchNorm2d(c)
    → ReLU, and for each "M" MaxPool2d(2). A stage is a run of convolutions between
    pools; with drop_block > 0 a DropBlock2d(drop_block, drop_block_size) follows
    the ReLU of every convolution of the last two stages (of every stage if there
    are fewer). pool: AdaptiveAvgPool2d(1). classifier: Flatten → Dropout(dropout)
    if dropout > 0 → Linear(last c, num_classes).

    Each "M" halves the map (rounding down), so an input of side s allows at most
    floor(log2(s)) of them: 4 for 28x28, 5 for 32x32. More fail at forward time.
    """
    if not isinstance(cfg, list | tuple) or not any(isinstance(c, int) for c in cfg):
        raise ValueError(
            f'cfg must be a list or tuple of channel counts and "M" (max pool) holding '
            f"at least one channel count; got {cfg!r}"
        )
    for i, c in enumerate(cfg):
        if c != "M" and (isinstance(c, bool) or not isinstance(c, int) or c < 1):
            raise ValueError(
                f'cfg[{i}] must be a positive channel count or "M" (max pool); got {c!r}'
            )
    _checks.positive_int("in_channels", in_channels)
    _checks.positive_int("num_classes", num_classes)
    dropout = _rate("dropout", dropout)
    drop_block = _rate("drop_block", drop_block)
    _checks.positive_int("drop_block_size", drop_block_size)

    # a convolution's stage is the number of pools before it; DropBlock goes into
    # the convolutions of the two last stages
    stages = [cfg[:i].count("M") for i in range(len(cfg))]
    conv_stages = sorted({s for c, s in zip(cfg, stages, strict=True) if c != "M"})
    dropped = set(conv_stages[-2:]) if drop_block > 0 else set()

    layers, channels = [], in_channels
    for c, s in zip(cfg, stages, strict=True):
        if c == "M":
            layers.append(nn.MaxPool2d(2))
            continue
        layers += [
            nn.Conv2d(channels, c, 3, padding=1, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(),
        ]
        if s in dropped:
            layers.append(DropBlock2d(drop_block, drop_block_size))
        channels = c
    head = [nn.Flatten()] + ([Dropout(dropout)] if dropout > 0 else [])
    return nn.Sequential(
        OrderedDict(
            features=nn.Sequential(*layers),
            pool=nn.AdaptiveAvgPool2d(1),
            classifier=nn.Sequential(*head, nn.Linear(channels, num_classes)),
        )
    )


class BasicBlock(nn.Module):
    """relu(drop_path(residual(x)) + shortcut(x)), residual = conv3x3-BN-ReLU-conv3x3-BN.

    The first convolution has the given stride; the shortcut is a 1x1 convolution
    with that stride and a BatchNorm when the shape changes, the identity otherwise.
    drop_path = 0 puts an nn.Identity in place of DropPath.
    """

    def __init__(self, in_channels: int, channels: int, stride: int = 1, drop_path: float = 0.0):
        super().__init__()
        self.residual = nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(in_channels, channels, 3, stride, padding=1, bias=False),
                bn1=nn.BatchNorm2d(channels),
                relu=nn.ReLU(),
                conv2=nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                bn2=nn.BatchNorm2d(channels),
            )
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(
                OrderedDict(
                    conv=nn.Conv2d(in_channels, channels, 1, stride, bias=False),
                    bn=nn.BatchNorm2d(channels),
                )
            )
        else:
            self.shortcut = nn.Identity()
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.drop_path(self.residual(x)) + self.shortcut(x))


def resnet_bn(
    widths=(16, 32, 64),
    blocks=(2, 2, 2),
    in_channels: int = 1,
    num_classes: int = 10,
    drop_path: float = 0.0,
) -> nn.Sequential:
    """A small CIFAR-style ResNet: Sequential(stem, stage1, ..., pool, classifier).

    stem: Conv3x3 (no bias) → BatchNorm2d → ReLU to widths[0]. stage k (from 1):
    blocks[k-1] BasicBlocks of widths[k-1] channels, the first with stride 2 from
    stage 2 on. pool: AdaptiveAvgPool2d(1); classifier: Flatten → Linear.

    Stochastic depth: block l of L (counted from 1 over all stages) drops its
    residual branch with probability drop_path * l / L, the linear rule of Huang
    et al. that rises from 0 at the input to drop_path at the last block.
    """
    widths = _positive_ints("widths", widths)
    blocks = _positive_ints("blocks", blocks)
    if len(widths) != len(blocks):
        raise ValueError(
            f"widths and blocks must have one entry per stage, so the same length; "
            f"got widths={widths!r} ({len(widths)}) and blocks={blocks!r} ({len(blocks)})"
        )
    _checks.positive_int("in_channels", in_channels)
    _checks.positive_int("num_classes", num_classes)
    drop_path = _rate("drop_path", drop_path)

    total, done = sum(blocks), 0
    net = OrderedDict(
        stem=nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(),
        )
    )
    channels = widths[0]
    for k, (width, count) in enumerate(zip(widths, blocks, strict=True)):
        stage = []
        for b in range(count):
            done += 1
            stride = 2 if k > 0 and b == 0 else 1
            stage.append(BasicBlock(channels, width, stride, drop_path * (done / total)))
            channels = width
        net[f"stage{k + 1}"] = nn.Sequential(*stage)
    net["pool"] = nn.AdaptiveAvgPool2d(1)
    net["classifier"] = nn.Sequential(nn.Flatten(), nn.Linear(channels, num_classes))
    return nn.Sequential(net)


class _Tracer(torch.fx.Tracer):
    """torch.fx tracer that keeps regulab's random layers as leaves: their forward
    inspects its input (type, dtype, shape), which a tracing proxy cannot answer."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, Dropout | DropPath | DropBlock2d):
            return True
        return super().is_leaf_module(m, qualname)


def symbolic_trace(model: nn.Module) -> torch.fx.GraphModule:
    """`torch.fx.symbolic_trace` that also accepts nets holding Dropout, DropPath or
    DropBlock2d from regulab.layers (they appear as call_module nodes)."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be an nn.Module; got {type(model).__name__}")
    graph = _Tracer().trace(model)
    return torch.fx.GraphModule(model, graph, model.__class__.__name__)


MODELS = {"linear": linear, "mlp": mlp, "vgg_bn": vgg_bn, "resnet_bn": resnet_bn}
