"""TensorLoader: epoch orders, views, batch sizes, sharding, errors; a DataLoader in `fit`.

References: sets and sorted indices of the examples seen (each exactly once),
the storage of the original tensor (views, not copies), the single-process
batches (for the ranks of a distributed run) and, for `fit`, the same
training run fed by `torch.utils.data.DataLoader`.
"""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from regulab.data.loader import TensorLoader, epoch_seed
from regulab.train import fit

N = 23


pytestmark = pytest.mark.usefixtures("one_thread")


def _data(n=N):
    x = torch.arange(n * 3, dtype=torch.float32).reshape(n, 3)
    y = torch.arange(n)  # y[i] == i names the example
    return x, y


def _epoch(loader, epoch):
    loader.set_epoch(epoch)
    return [tuple(t.clone() for t in batch) for batch in loader]


def _order(batches):
    return torch.cat([y for _, y in batches]).tolist()


@pytest.mark.parametrize("drop_last", [False, True])
def test_every_example_once_per_epoch_and_x_stays_with_y(drop_last):
    x, y = _data()
    loader = TensorLoader(x, y, batch_size=5, seed=3, drop_last=drop_last)
    for epoch in range(4):
        batches = _epoch(loader, epoch)
        order = _order(batches)
        if drop_last:
            assert len(order) == 20 and len(set(order)) == 20  # 3 examples left out, none twice
        else:
            assert sorted(order) == list(range(N))
        for xb, yb in batches:
            torch.testing.assert_close(xb, x[yb], rtol=0, atol=0)


def test_order_differs_between_epochs_and_repeats_for_same_seed_and_epoch():
    x, y = _data()
    a = TensorLoader(x, y, batch_size=4, seed=7)
    b = TensorLoader(x, y, batch_size=4, seed=7)
    orders = [_order(_epoch(a, e)) for e in range(5)]
    assert len({tuple(o) for o in orders}) == 5  # five epochs, five orders
    assert all(o != list(range(N)) for o in orders)  # shuffled
    # replaying an epoch, on the same object or on another one, gives the same order
    assert _order(_epoch(a, 2)) == orders[2]
    assert [_order(_epoch(b, e)) for e in (4, 0, 3)] == [orders[4], orders[0], orders[3]]
    # another seed, another order; the order is torch.randperm seeded with epoch_seed
    c = TensorLoader(x, y, batch_size=4, seed=8)
    assert _order(_epoch(c, 2)) != orders[2]
    g = torch.Generator().manual_seed(epoch_seed(7, 2))
    assert orders[2] == torch.randperm(N, generator=g).tolist()


def test_epoch_seed_separates_nearby_inputs():
    seeds = {epoch_seed(s, e, k) for s in range(4) for e in range(4) for k in range(3)}
    assert len(seeds) == 48
    assert all(0 <= s < 2**63 for s in seeds)


def test_without_shuffle_batches_are_views_in_order():
    x, y = _data()
    loader = TensorLoader(x, y, batch_size=5, shuffle=False)
    start = 0
    for xb, yb in loader:
        assert xb.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()
        assert yb.untyped_storage().data_ptr() == y.untyped_storage().data_ptr()
        assert xb.data_ptr() == x[start].data_ptr()  # a slice starting at the right row
        assert yb.tolist() == list(range(start, start + len(yb)))
        start += len(yb)
    assert start == N
    x[0, 0] = -1.0  # a view sees later writes: no copy was made
    assert next(iter(loader))[0][0, 0] == -1.0


@pytest.mark.parametrize(
    ("batch_size", "drop_last", "sizes"),
    [
        (5, False, [5, 5, 5, 5, 3]),
        (5, True, [5, 5, 5, 5]),
        (23, False, [23]),
        (23, True, [23]),
        (30, False, [23]),
        (1, True, [1] * 23),
    ],
)
def test_batch_sizes_and_last_batch(batch_size, drop_last, sizes):
    x, y = _data()
    for shuffle in (False, True):
        loader = TensorLoader(x, y, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last)
        assert loader.batch_sizes == sizes
        assert len(loader) == len(sizes)
        assert [len(yb) for _, yb in loader] == sizes


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("batch_size", [4, 5])
def test_two_ranks_interleave_to_the_single_process_batches(shuffle, batch_size):
    x, y = _data()
    single = TensorLoader(x, y, batch_size=batch_size, shuffle=shuffle, seed=5)
    ranks = [
        TensorLoader(x, y, batch_size=batch_size, shuffle=shuffle, seed=5, rank=r, world_size=2)
        for r in range(2)
    ]
    for epoch in (1, 2):
        whole = _epoch(single, epoch)
        shards = [_epoch(loader, epoch) for loader in ranks]
        assert all(loader.batch_sizes == single.batch_sizes for loader in ranks)
        assert len(shards[0]) == len(shards[1]) == len(whole)
        for (xb, yb), (x0, y0), (x1, y1) in zip(whole, *shards, strict=True):
            both = torch.cat([y0, y1])
            assert sorted(both.tolist()) == sorted(yb.tolist())  # same examples
            assert y0.tolist() == yb[0::2].tolist() and y1.tolist() == yb[1::2].tolist()
            torch.testing.assert_close(x0, xb[0::2], rtol=0, atol=0)
            torch.testing.assert_close(x1, xb[1::2], rtol=0, atol=0)


def test_errors_name_the_parameter():
    x, y = _data()
    with pytest.raises(ValueError, match=r"tensors must have the same length.*23, 22"):
        TensorLoader(x, y[:-1], batch_size=4)
    with pytest.raises(ValueError, match="tensors must be on one device"):
        TensorLoader(x, torch.zeros(N, device="meta"), batch_size=4)  # any second device
    with pytest.raises(ValueError, match="tensors must be one or more tensors"):
        TensorLoader(batch_size=4)
    with pytest.raises(ValueError, match="tensors must be one or more tensors"):
        TensorLoader(x, [1, 2], batch_size=4)
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match=rf"batch_size must be a positive integer.*{bad!r}"):
            TensorLoader(x, y, batch_size=bad)
    for rank in (2, -1):
        with pytest.raises(ValueError, match=rf"rank must be .*world_size=2.*got {rank}"):
            TensorLoader(x, y, batch_size=4, rank=rank, world_size=2)
    with pytest.raises(ValueError, match="world_size must be a positive integer"):
        TensorLoader(x, y, batch_size=4, world_size=0)
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        TensorLoader(x, y, batch_size=4, seed=-1)
    with pytest.raises(
        ValueError, match=r"batch_size must be at most the number of examples \(23\)"
    ):
        TensorLoader(x, y, batch_size=24, drop_last=True)
    with pytest.raises(ValueError, match="epoch must be an integer >= 0"):
        TensorLoader(x, y, batch_size=4).set_epoch(-1)


def _classifier():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 4))


def test_a_torch_dataloader_trains_like_the_tensor_loader():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(30, 3, generator=g)
    y = torch.randint(0, 4, (30,), generator=g)
    runs = []
    for train in (
        DataLoader(TensorDataset(x, y), batch_size=8, shuffle=False),
        TensorLoader(x, y, batch_size=8, shuffle=False),
    ):
        model = _classifier()
        opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
        h = fit(model, opt, train, epochs=3, val=(x, y), eval_train=0)
        runs.append((model.state_dict(), h.rows))
    (sd_a, rows_a), (sd_b, rows_b) = runs
    for k in sd_a:
        torch.testing.assert_close(sd_a[k], sd_b[k], rtol=0, atol=1e-6)
    for ra, rb in zip(rows_a, rows_b, strict=True):
        for k in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
            assert ra[k] == pytest.approx(rb[k], abs=1e-6), k


def test_a_torch_dataloader_with_the_defaults_reports_the_running_mean():
    x, y = torch.randn(10, 3), torch.randint(0, 4, (10,))
    rows, kinds = [], []
    for eval_train in (10_000, 0):  # the default, which a DataLoader cannot be sliced for
        model = _classifier()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        h = fit(model, opt, DataLoader(TensorDataset(x, y), batch_size=5), epochs=2,
                eval_train=eval_train)  # fmt: skip
        rows.append(h.rows)
        kinds.append(h.train_metrics)
    assert kinds == ["running", "running"]
    for a, b in zip(*rows, strict=True):
        assert a["train_loss"] == b["train_loss"] and a["train_accuracy"] == b["train_accuracy"]
    model = _classifier()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    h = fit(model, opt, TensorLoader(x, y, batch_size=5), epochs=1)
    assert h.train_metrics == "eval"
