"""EarlyStopping: stop epoch against a plain Python loop, restore-best, inputs, errors."""

import math

import pytest
import torch
from torch import nn

from regulab.early_stopping import EarlyStopping

NAN = float("nan")

SEQUENCES = {
    "dip_then_plateau": [1.0, 0.9, 0.95, 0.91, 0.92, 0.93, 0.94, 0.96],
    "slow_improvement": [1.0, 0.99, 0.985, 0.984, 0.9835, 0.983, 0.98, 0.979, 0.978],
    "noisy": [3.0, 2.0, 2.5, 1.9, 1.95, 1.8, 2.2, 2.1, 2.3, 1.7, 1.75, 1.76, 1.8, 1.9],
    "rise": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8],
    "with_nans": [1.0, NAN, 0.8, NAN, NAN, 0.79, 0.7, NAN, NAN, NAN, NAN],
    "flat": [0.5] * 10,
}


def reference(values, mode, patience, min_delta):
    """Plain loop: returns (stop_epoch or None, best, best_epoch, waits after each epoch)."""
    best, best_epoch, wait, waits = None, None, 0, []
    for epoch, v in enumerate(values):
        if mode == "min":
            better = not math.isnan(v) and (best is None or v < best - min_delta)
        else:
            better = not math.isnan(v) and (best is None or v > best + min_delta)
        if better:
            best, best_epoch, wait = v, epoch, 0
        else:
            wait += 1
        waits.append(wait)
        if wait == patience:
            return epoch, best, best_epoch, waits
    return None, best, best_epoch, waits


def run(stopper, values, model=None):
    """Feed values until update says stop; return the stop epoch (or None)."""
    for epoch, v in enumerate(values):
        if stopper.update(v, model):
            return epoch
    return None


def fill_model(model, value):
    """Set every parameter and buffer (float and integer) to `value`."""
    with torch.no_grad():
        for t in model.state_dict().values():
            t.fill_(value)


def tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))


def assert_model_is(model, value):
    for name, t in model.state_dict().items():
        assert torch.equal(t, torch.full_like(t, value)), f"{name} = {t} is not {value}"


# --- the stop epoch -----------------------------------------------------------


def test_reference_loop_on_hand_computed_cases():
    """Pin the reference itself on cases worked out by hand."""
    seq = SEQUENCES["dip_then_plateau"]
    assert reference(seq, "min", 3, 0.0)[:3] == (4, 0.9, 1)
    assert reference(seq, "min", 1, 0.0)[:3] == (2, 0.9, 1)
    assert reference(seq, "min", 1, 0.2)[:3] == (1, 1.0, 0)  # 0.9 is not < 1.0 - 0.2
    assert reference(seq, "max", 2, 0.0)[:3] == (2, 1.0, 0)
    assert reference(SEQUENCES["rise"], "max", 2, 0.0)[:3] == (None, 0.8, 7)
    assert reference(SEQUENCES["flat"], "min", 4, 0.0)[:3] == (4, 0.5, 0)


@pytest.mark.parametrize("name", sorted(SEQUENCES))
@pytest.mark.parametrize("mode", ["min", "max"])
@pytest.mark.parametrize("patience", [1, 2, 3, 5])
@pytest.mark.parametrize("min_delta", [0.0, 0.005, 0.05, 0.3])
def test_stops_at_the_epoch_the_reference_loop_says(name, mode, patience, min_delta):
    values = SEQUENCES[name]
    stop, best, best_epoch, waits = reference(values, mode, patience, min_delta)
    es = EarlyStopping(mode=mode, patience=patience, min_delta=min_delta)
    said = []
    for v in values:
        said.append(es.update(v))
        if said[-1]:
            break
    assert said == [False] * (len(said) - 1) + [stop is not None]
    assert (len(said) - 1 if stop is not None else None) == stop
    assert es.stopped_epoch_ == stop
    assert es.best_ == best
    assert es.best_epoch_ == best_epoch
    assert es.wait_ == waits[len(said) - 1]


def test_wait_counts_non_improving_epochs_and_resets():
    es = EarlyStopping(patience=10)
    waits = []
    for v in [1.0, 1.1, 1.2, 0.5, 0.6, 0.4, 0.4]:
        es.update(v)
        waits.append(es.wait_)
    assert waits == [0, 1, 2, 0, 1, 0, 1]


def test_learned_attributes_before_and_after():
    es = EarlyStopping(mode="min", patience=2)
    assert es.best_ == math.inf
    assert es.best_epoch_ is None and es.stopped_epoch_ is None and es.best_state_ is None
    assert es.wait_ == 0
    assert EarlyStopping(mode="max").best_ == -math.inf
    assert run(es, [2.0, 1.0, 1.5, 1.2, 0.1]) == 3
    assert (es.best_, es.best_epoch_, es.stopped_epoch_, es.wait_) == (1.0, 1, 3, 2)


# --- restore-best -------------------------------------------------------------


@pytest.mark.parametrize("mode", ["min", "max"])
def test_restores_best_weights_and_buffers_on_stop(mode):
    values = [5.0, 3.0, 4.0, 1.0, 2.0, 6.0, 7.0, 8.0, 9.0]
    if mode == "max":
        values = [-v for v in values]
    model = tiny_model()
    es = EarlyStopping(mode=mode, patience=3)
    for epoch, v in enumerate(values):
        fill_model(model, epoch + 10)  # "train" this epoch: distinct weights
        if es.update(v, model):
            break
    assert es.stopped_epoch_ == 6 and es.best_epoch_ == 3
    assert_model_is(model, 13)  # includes BatchNorm running stats and num_batches_tracked


def test_restore_after_training_ends_without_stopping():
    model = tiny_model()
    es = EarlyStopping(patience=5)
    for epoch, v in enumerate([4.0, 2.0, 3.0, 2.5]):
        fill_model(model, epoch + 10)
        assert not es.update(v, model)
    assert_model_is(model, 13)  # last weights until restore is called
    assert es.restore(model) is True
    assert_model_is(model, 11)


def test_restore_best_false_leaves_last_weights():
    model = tiny_model()
    es = EarlyStopping(patience=2, restore_best=False)
    stopped = False
    for epoch, v in enumerate([1.0, 2.0, 3.0]):
        fill_model(model, epoch + 10)
        stopped = es.update(v, model)
    assert stopped and es.best_epoch_ == 0
    assert es.best_state_ is None
    assert_model_is(model, 12)
    assert es.restore(model) is False
    assert_model_is(model, 12)


def test_best_state_is_a_copy_not_a_view():
    model = tiny_model()
    es = EarlyStopping(patience=3)
    fill_model(model, 1)
    es.update(0.5, model)
    fill_model(model, 99)  # in-place change after the best epoch
    assert all(torch.equal(t, torch.full_like(t, 1)) for t in es.best_state_.values())
    es.restore(model)
    assert_model_is(model, 1)


def test_restore_without_any_best_state_does_nothing():
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert EarlyStopping().restore(model) is False
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# --- inputs -------------------------------------------------------------------


def test_nan_never_improves():
    es = EarlyStopping(patience=2)
    assert run(es, [NAN, 1.0, NAN, NAN, 0.0]) == 3
    assert (es.best_, es.best_epoch_) == (1.0, 1)
    es = EarlyStopping(mode="max", patience=3)
    assert run(es, [NAN, NAN, NAN]) == 2
    assert es.best_ == -math.inf and es.best_epoch_ is None


def test_dict_input_reads_the_monitored_metric():
    es = EarlyStopping(monitor="val_acc", mode="max", patience=1)
    es.update({"val_loss": 9.0, "val_acc": 0.7})
    assert es.best_ == 0.7
    assert es.update({"val_loss": 0.1, "val_acc": 0.6})  # loss improved, acc did not
    assert es.stopped_epoch_ == 1


def test_missing_monitor_key_raises_naming_it():
    es = EarlyStopping(monitor="val_acc")
    with pytest.raises(ValueError, match=r"'val_acc'.*val_loss"):
        es.update({"val_loss": 0.3, "train_loss": 0.1})


def test_tensor_value_works():
    es = EarlyStopping(patience=1)
    es.update(torch.tensor(0.25, dtype=torch.float64, requires_grad=True))
    assert es.best_ == 0.25 and isinstance(es.best_, float)
    es.update({"val_loss": torch.tensor(0.125)})
    assert es.best_ == 0.125 and es.best_epoch_ == 1
    assert es.update(torch.tensor(0.5))


def test_non_numeric_value_raises():
    es = EarlyStopping()
    with pytest.raises(ValueError, match=r"value.*'low'"):
        es.update("low")


def test_update_after_stop_raises():
    es = EarlyStopping(patience=1)
    assert run(es, [1.0, 2.0]) == 1
    with pytest.raises(RuntimeError, match="after EarlyStopping said stop"):
        es.update(0.0)


# --- bad settings -------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"mode": "avg"}, r"mode.*'min', 'max'.*'avg'"),
        ({"patience": 0}, r"patience.*got 0"),
        ({"patience": -1}, r"patience.*got -1"),
        ({"patience": 2.5}, r"patience.*got 2\.5"),
        ({"min_delta": -1}, r"min_delta.*got -1"),
        ({"restore_best": "yes"}, r"restore_best.*'yes'"),
        ({"monitor": ""}, r"monitor.*''"),
    ],
)
def test_bad_settings_raise_value_error_naming_the_parameter(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        EarlyStopping(**kwargs)


def test_init_stores_settings():
    es = EarlyStopping("val_acc", "max", 7, 0.01, False)
    assert (es.monitor, es.mode, es.patience, es.min_delta, es.restore_best) == (
        "val_acc",
        "max",
        7,
        0.01,
        False,
    )
    assert "patience=7" in repr(es) and "'val_acc'" in repr(es)


def test_an_update_without_the_model_after_weights_were_kept_is_refused():
    model = nn.Linear(1, 1)
    es = EarlyStopping(patience=1)
    es.update(1.0, model)
    with pytest.raises(ValueError, match="model must be given on every update"):
        es.update(0.5)  # would leave epoch 0's weights as the "best"


def test_numpy_scalars_count_and_tensors_of_many_numbers_are_refused():
    import numpy as np

    es = EarlyStopping()
    es.update(np.float32(0.5))
    assert es.best_ == 0.5
    with pytest.raises(ValueError, match="one number"):
        es.update(torch.tensor([0.5, 0.4]))
