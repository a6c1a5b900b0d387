"""One epoch of `fit`'s steps: batches, mixed precision and gradient accumulation.

A micro-batch: map the batch to (inputs, target) (`batch_fn`), augment the
inputs, forward and loss under `torch.autocast` (bf16 or fp16; fp32 runs as
written), backward (through a `torch.amp.GradScaler` for fp16). Every
`accumulate` micro-batches, one optimizer step: unscale the gradients (fp16),
add the penalty's gradient (`Penalty.apply_`), clip the gradient norm, set the
learning rate from the schedule (a pure function of the step), step the
optimizer, then run the after-step projections (`max_norm_`, `prox_l1_`).

The loop object these functions read is `regulab.train`'s `_Loop`: the settings
of one `fit` call and the state it advances. Nothing here waits for the device,
except fp16, which reads the scaler's scale once per step to tell a skipped step.
"""

from contextlib import nullcontext

import torch
from torch import nn

from regulab import _checks
from regulab.data.loader import epoch_seed
from regulab.metrics import correct, examples, forward, mean_loss, sum_loss, to_device, unpack

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str) -> str:
    """Return precision if it is a key of PRECISIONS, else raise ValueError."""
    return _checks.one_of("precision", precision, tuple(PRECISIONS))


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """A GradScaler for fp16 (its gradients would underflow without one), else None."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None


def autocast(precision: str, device: torch.device):
    """`torch.autocast` to the precision's dtype on device's type; no context for fp32."""
    if PRECISIONS[precision] is None:
        return nullcontext()
    return torch.autocast(device.type, dtype=PRECISIONS[precision])


def rng_fork(device: torch.device):
    """`torch.random.fork_rng` over the CPU generator and, off the CPU, device's generator."""
    if device.type == "cpu":
        return torch.random.fork_rng(devices=[])
    module = torch.get_device_module(device.type)
    index = device.index if device.index is not None else module.current_device()
    return torch.random.fork_rng(devices=[index], device_type=device.type)


def reseed(seed: int, device: torch.device) -> None:
    """Seed the CPU generator and the generator of device (the ones `rng_fork` restores)."""
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        with torch.cuda.device(device):
            torch.cuda.manual_seed(seed)
    elif device.type != "cpu":
        torch.manual_seed(seed)  # other accelerators: torch seeds every device it has


def train_epoch(loop, epoch: int) -> torch.Tensor:
    """Run one epoch of steps; return [loss sum, correct, examples, batches without accuracy].

    torch's generators are first seeded from (seed, epoch, rank): dropout masks and
    augmentations; the loader's order comes from its own (seed, epoch).
    """
    reseed(epoch_seed(loop.seed, epoch, stream=1 + loop.rank), loop.device)
    train = loop.train
    set_epoch(train, epoch)
    loop.model.train()
    count_correct = loop.train_eval is None
    losses, counts, hits = [], [], []
    sizes = getattr(train, "batch_sizes", None)  # a TensorLoader's global batch sizes
    micro = 0
    for i, (batch, last) in enumerate(with_last(train)):
        inputs, y = to_device(unpack(batch, loop.batch_fn), loop.device)
        n = examples(y)
        global_size = None
        if loop.world_size > 1:
            global_size = sizes[i] if sizes is not None else n * loop.world_size
        micro += 1
        ends = micro == loop.accumulate or last
        batch_loss, out = micro_step(loop, inputs, y, global_size, sync=ends)
        losses.append(batch_loss)  # summed once per epoch: no work per step
        counts.append(n)
        if count_correct:
            hits.append(correct(out, y, loop.eval_loss))
        if ends:
            optimizer_step(loop, micro)
            micro = 0
            if loop.on_step is not None:
                loop.on_step()
    return running(losses, counts, hits, loop.device)


def micro_step(loop, inputs, y, global_size: int | None, sync: bool):
    """Forward and backward of one micro-batch; return its mean loss and output, detached.

    global_size: under DDP, the examples of the global batch this one is a share of.
    sync=False (a micro-batch before the last of its group) skips DDP's all-reduce.
    """
    if loop.augment is not None:
        inputs = loop.augment(inputs)
    no_sync = getattr(loop.model, "no_sync", None)
    with nullcontext() if sync or no_sync is None else no_sync():
        with autocast(loop.precision, loop.device):
            out = forward(loop.model, inputs)
            batch_loss, objective = _objective(loop, out, y, global_size)
        if loop.accumulate > 1:
            objective = objective / loop.accumulate
        if loop.scaler is not None:
            objective = loop.scaler.scale(objective)
        objective.backward()
    return batch_loss.detach(), out.detach()


def _objective(loop, out, y, global_size: int | None):
    """(the mean loss over this process's examples, what to backpropagate)."""
    if loop.world_size == 1:
        batch_loss = mean_loss(loop.loss, out, y)
        return batch_loss, batch_loss
    # sum / global batch size, times world_size because DDP averages gradients:
    # together the processes take the gradient of the global batch's mean loss
    total = sum_loss(loop.loss, out, y) * (loop.world_size / global_size)
    return total * (global_size / loop.world_size / examples(y)), total


def optimizer_step(loop, micro: int) -> None:
    """Step on the gradients of the last `micro` micro-batches (fewer than accumulate at an end).

    A step fp16's scaler skips (inf or NaN gradients) leaves the weights, the step
    counter and the after-step projections alone.
    """
    scaler = loop.scaler
    if micro < loop.accumulate:
        mean_of_partial_group_(loop.clip_params, loop.accumulate, micro)
    if scaler is not None:
        scaler.unscale_(loop.optimizer)  # the penalty and clipping see true gradients
    if loop.penalty is not None:
        loop.penalty.apply_()
    if loop.clip_grad_norm is not None:
        nn.utils.clip_grad_norm_(loop.clip_params, loop.clip_grad_norm)
    if loop.schedule is not None:
        factor = loop.schedule(loop.step)
        for group in loop.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor
    taken = True
    if scaler is None:
        loop.optimizer.step()
    else:
        scale = scaler.get_scale()
        scaler.step(loop.optimizer)
        scaler.update()
        taken = scaler.get_scale() >= scale  # the scale backs off after a skipped step
    loop.optimizer.zero_grad(set_to_none=True)
    if taken:
        for fn in loop.after_step:
            fn()
        loop.step += 1


def set_epoch(loader, epoch: int) -> None:
    """Give loader the epoch, for its order: its own set_epoch (a TensorLoader) or its
    sampler's (a DataLoader over a DistributedSampler); other loaders are left alone."""
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch)
    elif hasattr(getattr(loader, "sampler", None), "set_epoch"):
        loader.sampler.set_epoch(epoch)


def mean_of_partial_group_(params, accumulate: int, micro: int) -> None:
    """Gradients of a trailing group of micro < accumulate micro-batches, each loss divided
    by accumulate, scaled to the mean over the group's micro-batches."""
    grads = [p.grad for p in params if p.grad is not None]
    torch._foreach_mul_(grads, accumulate / micro)


def with_last(iterable):
    """(item, is_last) for every item of iterable, looking one item ahead."""
    items = iter(iterable)
    try:
        current = next(items)
    except StopIteration:
        return
    for item in items:
        yield current, False
        current = item
    yield current, True


def running(losses, counts, hits, device) -> torch.Tensor:
    """[loss sum, correct, examples, batches without accuracy] of an epoch's micro-batches."""
    if not losses:
        raise ValueError("train yielded no batches")
    n = torch.tensor(counts, dtype=torch.float64, device=device)
    total = torch.stack(losses).double() @ n
    if hits and all(h is not None for h in hits):
        right, suited = torch.stack(hits).double().sum(0)
        missing = len(hits) - suited
    else:
        right, missing = torch.zeros((), dtype=torch.float64, device=device), len(losses)
    missing = torch.as_tensor(missing, dtype=torch.float64, device=device)
    return torch.stack([total, right, n.sum(), missing])
