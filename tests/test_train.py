"""fit() and evaluate(): learning, reproducibility, divergence, callbacks."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch.nn import functional as F

import bloodcells.training.loop as train_module
from bloodcells.data import load_dataset
from bloodcells.data.dataset import standardize, to_unit
from bloodcells.errors import BloodcellsError, ModelError, TrainingDiverged, TrainingWarning
from bloodcells.evaluation.core import evaluate
from bloodcells.models.registry import build_model
from bloodcells.training.config import SEED_STRIDE, TrainConfig
from bloodcells.training.loop import (
    fit,
    make_model,
    make_optimizer,
    train_one_epoch,
    training_threads,
)
from bloodcells.training.records import Callback, FitState, History
from bloodcells.utils.devices import check_device, cpu_threads, select_device


def train_easy(root, **overrides):
    splits = load_dataset(root)
    config = TrainConfig(**{"model": "advanced", "epochs": 3, "lr": 1e-3, **overrides})
    model = make_model(config, len(splits.classes))
    return model, splits, fit(model, splits.train, splits.test, config)


@pytest.mark.filterwarnings("error::bloodcells.errors.TrainingWarning")
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

    with pytest.raises(TrainingDiverged, match="stopped: the run folder keeps epoch 1;"):
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


def test_a_loss_that_is_nan_in_the_first_epoch_says_nothing_was_kept(easy_root):
    splits = load_dataset(easy_root)
    config = TrainConfig(model="advanced", epochs=2, lr=1e9)
    with pytest.raises(TrainingDiverged, match="epoch 1; stopped: no epoch finished, so the run"):
        fit(make_model(config, 3), splits.train, splits.test, config)


def test_an_exploding_loss_warns_and_fit_prints_nothing(easy_root, capfd):
    splits = load_dataset(easy_root)
    config = TrainConfig(model="simple", epochs=1, lr=1e9)
    with pytest.warns(TrainingWarning, match="loss exploded in epoch 1") as caught:
        history = fit(make_model(config, 3), splits.train, splits.test, config)
    assert len(caught) == 1 and math.isfinite(history.last.train_loss)
    assert history.last.train_loss > 10 * math.log(3)
    assert capfd.readouterr() == ("", "")


def test_a_normal_training_does_not_warn(easy_root):
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrainingWarning)
        train_easy(easy_root, model="simple", epochs=2)


def test_bad_config_values_are_input_errors():
    with pytest.raises(BloodcellsError, match="epochs must be at least 1"):
        TrainConfig(epochs=0)
    with pytest.raises(BloodcellsError, match="unknown model"):
        TrainConfig(model="nope")


BAD_CONFIGS = {
    "head_dropout": {"options": {"head_dropout": 1.5}},
    "head_dropout-1": {"options": {"head_dropout": 1.0}},
    "head_dropout-negative": {"options": {"head_dropout": -0.1}},
    "head_dropout-text": {"options": {"head_dropout": "x"}},
    "extra_fc-negative": {"options": {"extra_fc": -1}},
    "extra_fc-huge": {"options": {"extra_fc": 10**9}},
    "extra_fc-fraction": {"options": {"extra_fc": 2.5}},
    "bn2-text": {"options": {"bn2": "yes"}},
    "option-of-another-model": {"model": "simple", "options": {"bn2": True}},
    "options-not-a-dict": {"options": ["bn2"]},
    "seed-negative": {"seed": -1},
    "seed-over-32-bits": {"seed": 2**32},
    "seed-huge": {"seed": 10**30},
    "epochs-many": {"epochs": 10_001},
    "epochs-fraction": {"epochs": 2.5},
    "epochs-bool": {"epochs": True},
    "batch_size-huge": {"batch_size": 65_537},
    "image_size-small": {"image_size": 3},
    "image_size-large": {"image_size": 513},
    "channels": {"channels": 2},
    "lr-zero": {"lr": 0},
    "lr-nan": {"lr": float("nan")},
    "lr-inf": {"lr": float("inf")},
    "lr-text": {"lr": "fast"},
    "device-mps": {"device": "mps"},
    "device-meta": {"device": "meta"},
    "device-xla": {"device": "xla"},
    "device-garbage": {"device": "gpu please"},
    "device-cuda-x": {"device": "cuda:x"},
}


@pytest.mark.parametrize("overrides", BAD_CONFIGS.values(), ids=BAD_CONFIGS)
def test_every_bad_config_value_is_a_one_line_input_error(overrides):
    with pytest.raises(BloodcellsError) as raised:
        TrainConfig(**overrides)
    assert "\n" not in str(raised.value)
    if "options" in overrides:
        assert isinstance(raised.value, ModelError)


def test_the_edges_of_every_range_are_accepted():
    TrainConfig(epochs=10_000, batch_size=65_536, seed=2**32 - 1, image_size=512, channels=3)
    TrainConfig(image_size=4, lr=1e9, options={"head_dropout": 0.99, "extra_fc": 4096})
    for device in (None, "", "cpu", "cuda", "cuda:0", "cuda:12"):
        TrainConfig(device=device)  # a GPU is only needed when training starts


def test_unsupported_devices_are_named_in_one_line():
    with pytest.raises(
        BloodcellsError, match=r"^unsupported device 'mps'; use cpu, cuda or cuda:N$"
    ):
        check_device("mps")
    with pytest.raises(BloodcellsError, match="unsupported device 'meta'"):
        select_device("meta")
    assert select_device("cpu") == torch.device("cpu")


def test_a_gpu_that_is_not_there_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BloodcellsError, match="no CUDA GPU is available"):
        check_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(BloodcellsError, match="has 1 CUDA GPU"):
        check_device("cuda:1")


def test_the_largest_seed_trains(easy_root):
    _, _, history = train_easy(easy_root, model="simple", epochs=1, seed=2**32 - 1)
    assert len(history) == 1


def reference_fit(model, splits, config):
    """The training loop as it was before issue 12 (the lab recipe), step for step."""
    optimizer = make_optimizer(model, config)
    x, y = splits.train.standardized(), splits.train.labels
    for epoch in range(1, config.epochs + 1):
        torch.manual_seed(config.seed * SEED_STRIDE + epoch)
        generator = torch.Generator().manual_seed(config.seed * SEED_STRIDE + epoch)
        order = torch.randperm(len(y), generator=generator)
        model.train()
        for start in range(0, len(y), config.batch_size):
            index = order[start : start + config.batch_size]
            loss = F.cross_entropy(model(x[index]), y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model, optimizer


def same_weights(a, b) -> bool:
    return all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())


@pytest.mark.parametrize("model", ["simple", "advanced"])
def test_fit_is_the_pre_speed_up_loop_bit_for_bit_on_the_same_threads_and_layout(
    easy_root, monkeypatch, model
):
    """Issue 12 changed only the threads and the memory layout: with those as they were, fit's
    weights are the old loop's to the bit (schedule, label smoothing and the prepare hook at
    their lab values change nothing)."""
    splits = load_dataset(easy_root)
    config = TrainConfig(model=model, epochs=2, batch_size=16)
    monkeypatch.setattr(train_module, "SINGLE_THREAD_PARAMETERS", 0)
    monkeypatch.setattr(train_module, "CHANNELS_LAST_MODELS", frozenset())
    fitted = make_model(config, 3)
    fit(fitted, splits.train, splits.test, config)
    reference, _ = reference_fit(make_model(config, 3), splits, config)
    assert same_weights(fitted, reference)


def test_fits_speed_paths_are_the_old_loop_on_one_thread_in_channels_last(easy_root):
    splits = load_dataset(easy_root)
    config = TrainConfig(model="advanced", epochs=2, batch_size=16)
    fitted = make_model(config, 3)
    fit(fitted, splits.train, splits.test, config)
    assert fitted[0].weight.is_contiguous(memory_format=torch.channels_last)
    model = make_model(config, 3)
    model.to(memory_format=torch.channels_last)
    with cpu_threads(1):
        reference, _ = reference_fit(model, splits, config)
    assert same_weights(fitted, reference)


def test_fit_gives_back_torchs_thread_count_even_when_training_fails(easy_root):
    splits = load_dataset(easy_root)
    before = torch.get_num_threads()
    config = TrainConfig(model="simple", epochs=1)
    fit(make_model(config, 3), splits.train, splits.test, config)
    assert torch.get_num_threads() == before
    bad = TrainConfig(model="advanced", epochs=2, lr=1e9)
    with pytest.raises(TrainingDiverged):
        fit(make_model(bad, 3), splits.train, splits.test, bad)
    assert torch.get_num_threads() == before


def test_small_models_at_small_batches_train_on_one_cpu_thread():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for name, batch, expected in (
        ("simple", 8, 1),
        ("advanced", 64, 1),
        ("advanced", 256, None),
        ("vgg16", 8, None),
    ):
        config = TrainConfig(model=name, batch_size=batch)
        with torch.device("meta"):
            model = make_model(config, 4)
        assert training_threads(model, config, cpu) == expected, (name, batch)
        assert training_threads(model, config, cuda) is None


def test_standardizing_per_batch_gives_the_same_bits_as_the_whole_set_at_once(easy_root):
    """What issue 11's augmentation relies on: x = standardize(augment(unit batch))."""
    images = load_dataset(easy_root).train.images
    whole = standardize(to_unit(images))
    for threads in (1, torch.get_num_threads()):
        with cpu_threads(threads):
            batches = [standardize(to_unit(images[i : i + 8])) for i in range(0, len(images), 8)]
        assert torch.equal(torch.cat(batches), whole)


def test_train_one_epoch_can_prepare_each_batch_from_stored_images(easy_root):
    splits = load_dataset(easy_root)
    config = TrainConfig(model="simple", epochs=1, batch_size=16)
    losses = []
    for x, prepare in (
        (splits.train.standardized(), None),
        (splits.train.images, lambda batch, generator: standardize(to_unit(batch))),
    ):
        model = make_model(config, 3)
        state = FitState(
            model, make_optimizer(model, config), config, splits.classes, History(), "cpu"
        )
        state.epoch, state.batches = 1, math.ceil(len(splits.train) / 16)
        losses.append(train_one_epoch(state, x, splits.train.labels, prepare=prepare))
    assert losses[0] == losses[1]


def test_make_model_leaves_the_callers_random_numbers_alone_and_repeats_its_weights():
    config = TrainConfig(model="advanced", seed=3, options={"head_dropout": 0.3})
    torch.manual_seed(1234)
    before = torch.random.get_rng_state()
    first = make_model(config, 5)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert same_weights(first, make_model(config, 5))
    torch.manual_seed(3)  # the weights of before: a model built right after seeding with 3
    assert same_weights(first, build_model("advanced", 1, 5, 32, head_dropout=0.3))


def test_a_fit_an_error_ends_tells_its_callbacks_it_failed(easy_root):
    splits = load_dataset(easy_root)
    config = TrainConfig(model="simple", epochs=2)
    ends = []

    class Broken(Callback):
        def on_epoch_end(self, state):
            raise RuntimeError("the disk is full")

        def on_fit_end(self, state):
            ends.append((state.status, len(state.history)))

    with pytest.raises(RuntimeError, match="disk is full"):
        fit(make_model(config, 3), splits.train, splits.test, config, [Broken()])
    assert ends == [("failed", 1)]
