"""fit's wider surface against references: random state, loss callables, batch_fn, precision,
gradient accumulation.

References: torch's generator state and a run of initializations without fit in
between; hand-written loops with F.cross_entropy(weight=...) and a hand-written
binary cross-entropy; the same model trained on (x, y) pairs; the fp32 run; one
step on the concatenated batch (accumulate=1 with a 4x batch).
"""

import copy
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from regulab import Penalty, checkpoint, inverse_sqrt
from regulab.data.loader import TensorLoader
from regulab.metrics import evaluate
from regulab.train import fit

TOL = 1e-6  # float32 runs of a few steps: agreement up to rounding

pytestmark = pytest.mark.usefixtures("one_thread")


def _data(n, seed, d=5, classes=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, classes, (n,), generator=g)


def _mlp(seed=0, dropout=0.0, out=3):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Dropout(dropout), nn.Linear(16, out))


def _same_params(a, b, atol=TOL):
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=atol, msg=name)


def _sgd_loop(model, loader, epochs, loss_fn, lr=0.2):
    """The reference: zero_grad, forward, loss_fn, backward, step over the loader's batches."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for epoch in range(1, epochs + 1):
        loader.set_epoch(epoch)
        for xb, yb in loader:
            opt.zero_grad()
            loss_fn(model(xb), yb).backward()
            opt.step()


# --- random state ----------------------------------------------------------------------------


def _fit_quietly(model, x, y, **kw):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return fit(model, opt, TensorLoader(x, y, batch_size=16), epochs=2, eval_train=0, **kw)


def test_fit_leaves_the_callers_random_state_as_it_found_it():
    x, y = _data(40, 0)
    torch.manual_seed(0)
    inits = []
    for _ in range(3):
        model = nn.Sequential(nn.Linear(5, 8), nn.Dropout(0.5), nn.Linear(8, 3))
        inits.append(model[0].weight.detach().clone())
        before = torch.get_rng_state()
        _fit_quietly(model, x, y, seed=0)  # the same fit seed every run
        assert torch.equal(torch.get_rng_state(), before)
    assert not torch.equal(inits[0], inits[1]) and not torch.equal(inits[1], inits[2])
    torch.manual_seed(0)  # the reference: the same initializations without fit in between
    for init in inits:
        model = nn.Sequential(nn.Linear(5, 8), nn.Dropout(0.5), nn.Linear(8, 3))
        assert torch.equal(model[0].weight, init)


def test_the_state_is_restored_when_fit_raises():
    x, y = _data(40, 0)
    model = _mlp()
    before = torch.get_rng_state()

    def boom(history):
        raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        _fit_quietly(model, x, y, on_epoch=boom)
    assert torch.equal(torch.get_rng_state(), before)


def _resumable(tmp_path, epochs, resume, **kw):
    x, y = _data(60, 0)
    model = _mlp(dropout=0.3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    h = fit(
        model, opt, TensorLoader(x, y, batch_size=8, seed=2), epochs=epochs, val=_data(20, 1),
        eval_train=0, checkpoint_dir=tmp_path, resume=resume, seed=4, **kw,
    )  # fmt: skip
    return model, [{k: v for k, v in r.items() if k != "seconds"} for r in h.rows]


def _overflowing(out, t):
    """A loss whose scaled fp16 gradients overflow at the GradScaler's first scales."""
    return 100 * F.cross_entropy(out, t)


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"precision": "bf16", "accumulate": 3},
        {"precision": "fp16", "accumulate": 2, "loss": _overflowing},
    ],
    ids=["fp32", "bf16-accumulate", "fp16-accumulate"],
)
def test_resume_is_bit_identical_with_precision_and_accumulation(tmp_path, kw):
    straight, rows = _resumable(tmp_path / "a", 4, False, **kw)
    _resumable(tmp_path / "b", 2, False, **kw)
    resumed, resumed_rows = _resumable(tmp_path / "b", 4, True, **kw)
    assert resumed_rows == rows
    for p, q in zip(straight.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q)
    if kw.get("precision") == "fp16":
        _, state = checkpoint.load(checkpoint.latest(tmp_path / "b"))
        assert state["scaler"]["scale"] < 65536.0  # steps were skipped: the state matters


def test_resume_refuses_another_precision_or_accumulation(tmp_path):
    _resumable(tmp_path, 1, False, accumulate=2)
    with pytest.raises(ValueError, match=r"accumulate must be 2 to resume .* got 1"):
        _resumable(tmp_path, 2, True)
    with pytest.raises(ValueError, match=r"precision must be 'fp32' to resume .* got 'bf16'"):
        _resumable(tmp_path, 2, True, accumulate=2, precision="bf16")


# --- loss callables --------------------------------------------------------------------------


def test_class_weights_match_a_hand_written_weighted_cross_entropy():
    x, y = _data(50, 0)
    w = torch.tensor([0.2, 1.0, 3.0])
    model, ref = _mlp(), _mlp()
    fit(
        model, torch.optim.SGD(model.parameters(), lr=0.2), TensorLoader(x, y, batch_size=16),
        epochs=3, loss=nn.CrossEntropyLoss(weight=w), eval_train=0,
    )  # fmt: skip
    _sgd_loop(ref, TensorLoader(x, y, batch_size=16), 3, lambda o, t: F.cross_entropy(o, t, w))
    _same_params(model, ref)


def _bce_by_hand(z, t):
    p = 1 / (1 + torch.exp(-z[:, 0]))
    return -(t * torch.log(p) + (1 - t) * torch.log(1 - p)).mean()


def test_bce_with_logits_matches_a_hand_written_loop_and_reports_accuracy():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(48, 5, generator=g)
    t = (x[:, 0] + 0.3 * torch.randn(48, generator=g) > 0).float()
    model, ref = _mlp(out=1), _mlp(out=1)
    h = fit(
        model, torch.optim.SGD(model.parameters(), lr=0.2), TensorLoader(x, t, batch_size=16),
        epochs=3, loss=lambda z, y: F.binary_cross_entropy_with_logits(z[:, 0], y),
        eval_train=48,
    )  # fmt: skip
    _sgd_loop(ref, TensorLoader(x, t, batch_size=16), 3, _bce_by_hand)
    _same_params(model, ref)
    with torch.no_grad():
        z = ref(x)
    row = h.rows[-1]
    assert row["train_loss"] == pytest.approx(_bce_by_hand(z, t).item(), abs=TOL)
    assert row["train_accuracy"] == pytest.approx(((z[:, 0] > 0).float() == t).float().mean())


def test_a_regression_callable_reports_no_accuracy():
    x, _ = _data(40, 0)
    y = x.sum(1)
    model = _mlp(out=1)
    h = _fit_quietly(model, x, y, loss=lambda out, t: (out[:, 0] - t).square().mean())
    assert h.rows[-1]["train_accuracy"] is None
    assert math.isfinite(h.rows[-1]["train_loss"])


@pytest.mark.parametrize(
    ("loss", "error", "match"),
    [
        (3, TypeError, r"loss must be a name \(cross_entropy, mse, half_mse\) or a callable"),
        ("hinge", ValueError, "loss must be one of 'cross_entropy', 'mse', 'half_mse' or a"),
        (nn.CrossEntropyLoss(reduction="none"), ValueError, r"scalar tensor .* got \(16,\)"),
    ],
)
def test_bad_losses_are_refused_in_one_line(loss, error, match):
    x, y = _data(40, 0)
    with pytest.raises(error, match=match):
        _fit_quietly(_mlp(), x, y, loss=loss)


# --- batch_fn --------------------------------------------------------------------------------


class _Dicts(Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"left": self.x[i, :2], "right": self.x[i, 2:], "label": self.y[i]}


class _TwoInputs(nn.Module):
    """model(left, right): the _mlp on their concatenation, with the same parameters."""

    def __init__(self, seed=0):
        super().__init__()
        self.net = _mlp(seed)

    def forward(self, left, right):
        return self.net(torch.cat([left, right], 1))


@pytest.mark.parametrize("form", ["dict", "tuple"])
def test_dict_batches_through_batch_fn_match_pairs(form):
    x, y = _data(50, 0)
    val = _data(20, 1)
    if form == "dict":
        batch_fn = lambda b: ({"left": b["left"], "right": b["right"]}, b["label"])  # noqa: E731
    else:
        batch_fn = lambda b: ((b["left"], b["right"]), b["label"])  # noqa: E731
    model = _TwoInputs()
    h = fit(
        model, torch.optim.SGD(model.parameters(), lr=0.2),
        DataLoader(_Dicts(x, y), batch_size=16), epochs=2, eval_train=0, batch_fn=batch_fn,
        val=DataLoader(_Dicts(*val), batch_size=7),
    )  # fmt: skip
    ref = _mlp()
    ref_h = fit(
        ref, torch.optim.SGD(ref.parameters(), lr=0.2),
        TensorLoader(x, y, batch_size=16, shuffle=False), epochs=2, eval_train=0, val=val,
    )  # fmt: skip
    _same_params(model.net, ref)
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
        assert h.rows[-1][key] == pytest.approx(ref_h.rows[-1][key], abs=TOL), key


def test_batch_fn_with_eval_train_on_a_tensor_loader_of_three_tensors():
    x, y = _data(50, 0)
    model = _TwoInputs()
    h = fit(
        model, torch.optim.SGD(model.parameters(), lr=0.2),
        TensorLoader(x[:, :2], x[:, 2:], y, batch_size=16), epochs=2, eval_train=30,
        batch_fn=lambda b: ((b[0], b[1]), b[2]),
    )  # fmt: skip
    with torch.no_grad():
        direct = F.cross_entropy(model.net(x[:30]), y[:30]).item()
    assert h.rows[-1]["train_loss"] == pytest.approx(direct, abs=TOL)


def test_a_dict_batch_without_batch_fn_says_what_to_pass():
    x, y = _data(20, 0)
    model = _TwoInputs()
    with pytest.raises(TypeError, match=r"must be an \(inputs, target\) pair; got dict with keys"):
        fit(
            model, torch.optim.SGD(model.parameters(), lr=0.1),
            DataLoader(_Dicts(x, y), batch_size=8), epochs=1, eval_train=0,
        )  # fmt: skip
    with pytest.raises(TypeError, match="batch_fn must be a callable"):
        _fit_quietly(_mlp(), x, y, batch_fn="label")


# --- mixed precision -------------------------------------------------------------------------


def _precision_run(precision, **kw):
    x, y = _data(96, 0)
    model = _mlp()
    seen = []
    model[0].register_forward_hook(lambda m, i, out: seen.append((m.training, out.dtype)))
    h = fit(
        model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
        TensorLoader(x, y, batch_size=16), epochs=3, val=_data(30, 1), precision=precision,
        **kw,
    )  # fmt: skip
    return model, h, seen


def test_bf16_runs_in_bf16_and_stays_close_to_fp32():
    ref, ref_h, ref_seen = _precision_run("fp32")
    model, h, seen = _precision_run("bf16")
    assert {dtype for training, dtype in seen if training} == {torch.bfloat16}
    assert {dtype for training, dtype in seen if not training} == {torch.float32}  # evaluation
    assert {dtype for _, dtype in ref_seen} == {torch.float32}
    assert all(p.dtype == torch.float32 for p in model.parameters())
    _same_params(model, ref, atol=5e-3)  # measured 1.4e-3: bf16 keeps 8 bits of mantissa
    assert h.rows[-1]["val_loss"] == pytest.approx(ref_h.rows[-1]["val_loss"], abs=1e-3)


def test_fp16_runs_with_a_grad_scaler_on_cpu_and_stays_close_to_fp32():
    ref, _, _ = _precision_run("fp32")
    model, h, seen = _precision_run("fp16")
    assert {dtype for training, dtype in seen if training} == {torch.float16}
    assert h.status == "completed"
    _same_params(model, ref, atol=1e-3)  # measured 1.6e-4


def test_fp16_steps_with_inf_gradients_are_skipped_not_divergence(tmp_path):
    x, y = _data(64, 0)
    model = _mlp()
    steps, projections = [], []
    h = fit(
        model, torch.optim.SGD(model.parameters(), lr=1e-4), TensorLoader(x, y, batch_size=8),
        epochs=2, eval_train=0, loss=_overflowing, precision="fp16", checkpoint_dir=tmp_path,
        on_step=lambda: steps.append(1), after_step=[lambda: projections.append(1)],
    )  # fmt: skip
    assert h.status == "completed"
    assert all(math.isfinite(r["train_loss"]) for r in h.rows)
    _, state = checkpoint.load(checkpoint.latest(tmp_path))
    skipped = len(steps) - state["step"]
    assert len(steps) == 16 and 0 < skipped < 16  # on_step: every attempt; step: taken ones
    assert len(projections) == state["step"]
    assert state["scaler"]["scale"] == 65536.0 / 2**skipped  # halved once per skipped step
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_bad_precision_is_named():
    x, y = _data(20, 0)
    with pytest.raises(ValueError, match="precision must be one of 'fp32', 'bf16', 'fp16'"):
        _fit_quietly(_mlp(), x, y, precision="fp8")


# --- gradient accumulation -------------------------------------------------------------------


def _accumulated(n, batch_size, accumulate, tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 5, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    model = _mlp()
    opt = torch.optim.SGD(param_groups_of(model), lr=0.3, momentum=0.9)
    counts = {"on_step": 0, "after_step": 0}
    h = fit(
        model, opt, TensorLoader(x, y, batch_size=batch_size, seed=7), epochs=3,
        accumulate=accumulate, penalty=Penalty(model.parameters(), l1=1e-3, l2=1e-2),
        clip_grad_norm=0.5, schedule=inverse_sqrt(0.5), eval_train=n,
        on_step=lambda: counts.update(on_step=counts["on_step"] + 1),
        after_step=[lambda: counts.update(after_step=counts["after_step"] + 1)],
        checkpoint_dir=tmp_path,
    )  # fmt: skip
    _, state = checkpoint.load(checkpoint.latest(tmp_path))
    return model, h, counts, state["step"]


def param_groups_of(model):
    return [{"params": list(model.parameters())}]


@pytest.mark.parametrize(("n", "steps_per_epoch"), [(96, 3), (80, 3)], ids=["even", "trailing"])
def test_accumulating_four_batches_of_8_equals_one_batch_of_32(tmp_path, n, steps_per_epoch):
    # 80 examples: groups of 4, 4 and 2 micro-batches; the last equals one batch of 16
    model, h, counts, step = _accumulated(n, 8, 4, tmp_path / "a")
    ref, ref_h, ref_counts, ref_step = _accumulated(n, 32, 1, tmp_path / "b")
    _same_params(model, ref)
    assert step == ref_step == 3 * steps_per_epoch
    assert counts == ref_counts == {"on_step": step, "after_step": step}
    for row, ref_row in zip(h.rows, ref_h.rows, strict=True):
        assert row["lr"] == ref_row["lr"]  # the schedule counts optimizer steps
        assert row["train_loss"] == pytest.approx(ref_row["train_loss"], abs=TOL)


def test_accumulate_is_checked():
    x, y = _data(20, 0)
    with pytest.raises(ValueError, match="accumulate must be a positive integer"):
        _fit_quietly(_mlp(), x, y, accumulate=0)


def test_a_torch_module_loss_keeps_its_own_state_off_the_model():
    # a loss module with a buffer (the class weights) is only called, never trained
    x, y = _data(40, 0)
    loss = nn.CrossEntropyLoss(weight=torch.ones(3))
    model = _mlp()
    before = copy.deepcopy(loss.state_dict())
    _fit_quietly(model, x, y, loss=loss)
    assert torch.equal(loss.weight, before["weight"])
    assert evaluate(model, (x, y), loss) == pytest.approx(evaluate(model, (x, y), "cross_entropy"))


# --- under torchrun ----------------------------------------------------------------------------

DDP_SCRIPT = """
import sys
import torch
from torch.nn import functional as F
from safetensors.torch import save_file
from regulab import distributed
from regulab.data.loader import TensorLoader
from regulab.train import fit

rank = distributed.init("cpu")
torch.set_num_threads(1)
g = torch.Generator().manual_seed(0)
x, y = torch.randn(80, 5, generator=g), torch.randint(0, 3, (80,), generator=g)
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
h = fit(
    model, torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9),
    TensorLoader(x, y, batch_size=16, seed=1), epochs=2, eval_train=0, accumulate=2,
    loss=lambda out, t: F.cross_entropy(out, t), batch_fn=lambda b: (b[0], b[1]),
)
if rank == 0:
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    state["train_loss"] = torch.tensor(h.rows[-1]["train_loss"])
    state["train_accuracy"] = torch.tensor(h.rows[-1]["train_accuracy"])
    save_file(state, sys.argv[1])
distributed.destroy()
"""


def test_two_processes_with_accumulation_and_a_callable_loss_match_one(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from safetensors.torch import load_file

    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    results = {}
    for n in (1, 2):  # one plain process (no process group), then two under torchrun
        launch = [sys.executable] if n == 1 else [
            str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc_per_node=2"
        ]  # fmt: skip
        done = subprocess.run(
            [*launch, str(script), str(tmp_path / f"{n}.safetensors")],
            capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        results[n] = load_file(str(tmp_path / f"{n}.safetensors"))
    for key, one in results[1].items():
        torch.testing.assert_close(results[2][key], one, rtol=0, atol=TOL, msg=key)
