"""Why a group of coupled channels cannot be cut: what Torch-Pruning cannot re-index.

Torch-Pruning cannot re-index channels that pass through a split or chunk of channels (its
sizes live in forward code), a slice of channels, a view/reshape of channels other than a
flatten into a Linear layer (a channel shuffle), or a channel/pixel shuffle; and removing
channels that a LayerNorm or GroupNorm normalizes together changes the others.
`regulab.slim.coupling` holds such a group whole.
"""

from torch import nn

# grad_fn names of ops that mix channels, which Torch-Pruning would take as elementwise
SHUFFLES = ("channelshuffle", "pixelshuffle", "pixelunshuffle")


def held_reason(group, names: dict) -> str:
    """Why Torch-Pruning cannot re-index this group's channels, or ""."""
    for item in group.items:
        for node in (item.dep.source, item.dep.target):
            why = _unsupported(node)
            if why:
                return f"its channels pass through {why}, which Torch-Pruning cannot re-index"
        m = item.dep.target.module
        if isinstance(m, nn.LayerNorm) or (
            isinstance(m, nn.GroupNorm) and m.num_groups < m.num_channels
        ):
            return (
                f"its channels are normalized together by layer {names.get(m)} "
                f"({type(m).__name__}), so removing some would change the others"
            )
    return ""


def _unsupported(node) -> str:
    """What is wrong with node for channel pruning, or ""."""
    from torch_pruning import ops

    fn = node.grad_fn.name().lower() if node.grad_fn is not None else ""
    splits = (ops.OPTYPE.SPLIT, ops.OPTYPE.UNBIND, ops.OPTYPE.SLICE)
    if node.type in splits and _dim(node.grad_fn) in (None, 1):
        kind = {ops.OPTYPE.SPLIT: "a split or chunk", ops.OPTYPE.UNBIND: "an unbind"}
        return f"{kind.get(node.type, 'a slice')} of the channel dimension ({_op(node)})"
    if node.type == ops.OPTYPE.RESHAPE and not (
        _keeps_channels(node.grad_fn) or _flattens_into_linear(node)
    ):
        return f"a view/reshape of the channels such as a channel shuffle ({_op(node)})"
    if node.type == ops.OPTYPE.EXPAND:
        return f"an expand ({_op(node)})"
    if any(s in fn for s in SHUFFLES):
        return f"a channel or pixel shuffle ({_op(node)})"
    return ""


def _op(node) -> str:
    return node.grad_fn.name() if node.grad_fn is not None else type(node.module).__name__


def _dim(grad_fn):
    """The dimension a split/slice/unbind works on (normalized), or None if not recorded."""
    dim, sizes = getattr(grad_fn, "_saved_dim", None), getattr(grad_fn, "_saved_self_sym_sizes", ())
    if dim is None:
        return None
    dim = dim - 2**64 if dim >= 2**63 else dim  # negative dims are saved as unsigned
    return dim + len(sizes) if dim < 0 else dim


def _keeps_channels(grad_fn) -> bool:
    """True if a view/reshape keeps the batch and channel dimensions (reshapes only the
    spatial ones, as flatten(2) does), judged by the shapes autograd recorded."""
    before = getattr(grad_fn, "_saved_self_sym_sizes", None)
    after = getattr(grad_fn, "_input_metadata", None)  # (the shape of the op's output)
    if before is None or not after:
        return False
    after = list(after[0].shape)
    if len(before) == 1:  # a per-channel vector viewed to broadcast (PReLU's weight)
        return [d for d in after if d != 1] == list(before)
    return list(before[:2]) == after[:2]


def _flattens_into_linear(node) -> bool:
    """True if node (a view/reshape) only feeds Linear layers, through elementwise ops."""
    from torch_pruning import ops

    todo, seen = list(node.outputs), set()
    while todo:
        n = todo.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        if n.type == ops.OPTYPE.ELEMENTWISE and not any(s in _op(n).lower() for s in SHUFFLES):
            todo.extend(n.outputs)
        elif n.type != ops.OPTYPE.LINEAR:
            return False
    return True
