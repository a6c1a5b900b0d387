"""Size and speed of a network: parameters, MACs and FLOPs, CPU latency.

FLOPs come from `torch.utils.flop_counter.FlopCounterMode`, which counts the
matrix products and convolutions (the layers slimming shrinks) at 2 FLOPs per
multiply-add, the convention of the paper (arXiv:1708.06519, table 1); MACs =
FLOPs / 2. BatchNorm, activations and pooling are not counted. Latency is the
median wall time of repeated eval-mode forwards (after warm-up) at each batch size.
"""

import statistics
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flops(model: nn.Module, example_input: torch.Tensor) -> int:
    """FLOPs of one forward of one example (2 per multiply-add), in eval mode."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(example_input[:1])
    finally:
        model.train(was)
    return int(counter.get_total_flops())


@torch.no_grad()
def latency(model: nn.Module, example_input: torch.Tensor, batch: int, repeats: int = 20) -> float:
    """Median seconds of one eval-mode forward of a batch of `batch` inputs."""
    x = example_input[:1].expand(batch, *example_input.shape[1:]).contiguous()
    was = model.training
    model.eval()
    try:
        for _ in range(3):
            model(x)
        if x.is_cuda:
            torch.cuda.synchronize()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            if x.is_cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    finally:
        model.train(was)
    return statistics.median(times)


def measure(model: nn.Module, example_input, batches=(1, 256), repeats: int = 20) -> dict:
    """{"params", "flops", "macs", "latency_s": {batch: median seconds}}."""
    f = flops(model, example_input)
    return {
        "params": parameters(model),
        "flops": f,
        "macs": f // 2,
        "latency_s": {b: latency(model, example_input, b, repeats) for b in batches},
    }
