"""fit() and evaluate(): learning, reproducibility, divergence, callbacks."""

from __future__ import annotations

import pytest
import torch

from bloodcells.data import load_dataset
from bloodcells.errors import TrainingDiverged
from bloodcells.train import Callback, TrainConfig, evaluate, fit, make_model


def train_easy(root, **overrides):
    splits = load_dataset(root)
    config = TrainConfig(**{"model": "advanced", "epochs": 3, "lr": 1e-3, **overrides})
    model = make_model(config, len(splits.classes))
    return model, splits, fit(model, splits.train, splits.test, config)


def test_advanced_cnn_learns_an_easy_set(easy_root):
    model, splits, history = train_easy(easy_root)
    assert len(history) == 3
    assert history.last.dev_accuracy > 0.8  # chance is 1/3
    assert history.epochs[-1].train_loss < history.epochs[0].train_loss
    result = evaluate(model, splits.test)
    assert result.accuracy == pytest.approx(history.last.dev_accuracy)
    assert sum(map(sum, history.last.confusion)) == len(splits.test)


def test_same_seed_same_numbers_other_seed_other_numbers(easy_root):
    _, _, a = train_easy(easy_root, epochs=2)
    _, _, b = train_easy(easy_root, epochs=2)
    _, _, c = train_easy(easy_root, epochs=2, seed=1)
    assert a.column("train_loss") == b.column("train_loss")
    assert a.column("dev_loss") == b.column("dev_loss")
    assert a.column("train_loss") != c.column("train_loss")


def test_a_non_finite_loss_stops_training_and_keeps_the_last_good_weights(easy_root):
    splits = load_dataset(easy_root)
    config = TrainConfig(model="simple", epochs=4, lr=1e-3)
    model = make_model(config, len(splits.classes))
    snapshots = []

    class PoisonAfterFirstEpoch(Callback):
        def on_epoch_end(self, state):
            snapshots.append({k: v.clone() for k, v in state.model.state_dict().items()})
            state.optimizer.param_groups[0]["lr"] = float("nan")

    history_seen = []

    class Watch(Callback):
        def on_fit_end(self, state):
            history_seen.append((state.status, len(state.history)))

    with pytest.raises(TrainingDiverged, match="kept the weights of epoch 1"):
        fit(model, splits.train, splits.test, config, [PoisonAfterFirstEpoch(), Watch()])
    assert history_seen == [("diverged", 1)]
    for name, value in model.state_dict().items():
        assert torch.equal(value, snapshots[0][name]), name


def test_callbacks_hear_every_batch_and_epoch(easy_root):
    splits = load_dataset(easy_root)
    config = TrainConfig(model="simple", epochs=2, batch_size=16)
    events = []

    class Recorder(Callback):
        def on_fit_start(self, state):
            events.append(("start", state.batches))

        def on_batch_end(self, state):
            events.append(("batch", state.epoch, state.batch))

        def on_epoch_end(self, state):
            events.append(("epoch", state.epoch))

        def on_fit_end(self, state):
            events.append(("end", state.status))

    fit(make_model(config, 3), splits.train, splits.test, config, [Recorder()])
    assert events[0] == ("start", 8)  # 120 images / 16 per batch, the last one partial
    assert events.count(("epoch", 1)) == 1 and events[-1] == ("end", "finished")
    assert [e for e in events if e[0] == "batch"][-1] == ("batch", 2, 8)


def test_bad_config_values_are_input_errors():
    from bloodcells.errors import BloodcellsError

    with pytest.raises(BloodcellsError, match="epochs must be at least 1"):
        TrainConfig(epochs=0)
    with pytest.raises(BloodcellsError, match="unknown model"):
        TrainConfig(model="nope")
