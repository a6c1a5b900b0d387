"""SGD and Adam for K stacked copies: torch.optim's update rules with a learning rate per copy.

torch.optim holds one learning rate per parameter group and keys its state by tensor.
K stacked copies need a rate each (a searched `lr`, a population-based-training
perturbation) and a state that can be indexed along the copies: `keep(index)` drops
copies (successive halving), `copy_(src, dst)` gives copies dst the state of copies src
(PBT's exploit step). The rules are those of torch's single-tensor `sgd` (momentum with
no dampening, Nesterov; the buffer starts as the first gradient) and `adam` (Kingma & Ba,
arXiv:1412.6980; eps 1e-8, no amsgrad), with the bias corrections per copy. Weight decay
is not applied here: `update.step` applies it as `fit` does (coupled, or decoupled for
adamw, arXiv:1711.05101), so "adamw" steps as "adam".
"""

import torch


def per_copy(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """values (K,) as like's dtype and device, shaped (K, 1, ...) to broadcast against like."""
    return values.to(like.device, like.dtype).view(-1, *[1] * (like.ndim - 1))


class StackedOptimizer:
    """Steps stacked tensors (K, ...) on their .grad; state: `buffers` and `steps` (K,)."""

    def __init__(self, name: str, momentum=0.0, nesterov=False, betas=(0.9, 0.999), eps=1e-8):
        self.name = name  # "sgd", "adam" or "adamw"
        self.momentum = float(momentum)  # sgd: heavy ball, buf <- momentum * buf + g
        self.nesterov = bool(nesterov)  # sgd: step along g + momentum * buf
        self.betas = tuple(float(b) for b in betas)  # adam: decay of the two moments
        self.eps = float(eps)  # adam: added to sqrt of the second moment
        self.buffers: dict[str, dict[str, torch.Tensor]] = {}  # tensor name -> (K, ...) state
        self.steps: torch.Tensor | None = None  # (K,) float64: steps each copy has taken

    @torch.no_grad()
    def step(self, params: dict, lr: torch.Tensor) -> None:
        """One step of every tensor of params (name -> (K, ...)) that has a .grad; lr (K,)."""
        if self.steps is None:
            self.steps = torch.zeros(len(lr), dtype=torch.float64, device=lr.device)
        self.steps += 1
        if self.name == "sgd":
            for name, p in params.items():
                if p.grad is not None:
                    _sgd(self, name, p, per_copy(lr, p))
            return
        beta1, beta2 = self.betas
        step_size = lr / (1 - beta1**self.steps)  # lr / bias correction 1, in float64
        root = (1 - beta2**self.steps).sqrt()  # sqrt of bias correction 2
        for name, p in params.items():
            if p.grad is not None:
                _adam(self, name, p, per_copy(step_size, p), per_copy(root, p))

    def keep(self, index: torch.Tensor) -> None:
        """Keep copies index (K' indices, in that order) of every state tensor."""
        for state in self.buffers.values():
            for key, t in state.items():
                state[key] = t[index.to(t.device)].clone()
        if self.steps is not None:
            self.steps = self.steps[index.to(self.steps.device)].clone()

    @torch.no_grad()
    def copy_(self, src: torch.Tensor, dst: torch.Tensor) -> None:
        """Copies dst take the state of copies src (all read before any is written)."""
        for state in self.buffers.values():
            for t in state.values():
                t[dst.to(t.device)] = t[src.to(t.device)]
        if self.steps is not None:
            self.steps[dst.to(self.steps.device)] = self.steps[src.to(self.steps.device)]


def _sgd(opt: StackedOptimizer, name, p, lr):
    """torch's single-tensor sgd on p (K, ...) with lr (K, 1, ...)."""
    g = p.grad
    if opt.momentum:
        state = opt.buffers.setdefault(name, {})
        buf = state.get("momentum")
        if buf is None:
            buf = state["momentum"] = g.detach().clone()
        else:
            buf.mul_(opt.momentum).add_(g)
        g = g.add(buf, alpha=opt.momentum) if opt.nesterov else buf
    p.sub_(g * lr)


def _adam(opt: StackedOptimizer, name, p, step_size, root):
    """torch's single-tensor adam on p; step_size lr / bias correction 1, root sqrt of 2."""
    beta1, beta2 = opt.betas
    g = p.grad
    state = opt.buffers.setdefault(name, {})
    if not state:
        state["exp_avg"] = torch.zeros_like(p)
        state["exp_avg_sq"] = torch.zeros_like(p)
    exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
    exp_avg.lerp_(g, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    denom = (exp_avg_sq.sqrt() / root).add_(opt.eps)
    p.addcdiv_(exp_avg * step_size, denom, value=-1)
