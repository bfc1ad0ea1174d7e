"""Stacked training: member k of a stack is the model fit trains alone with the same config.

The equivalence is tested twice. In float64 the stack and fit agree to TOL64 = 1e-9 in every
weight, buffer and Adam moment: the stack does the same arithmetic in another order, only
rounding (1e-16 there) tells them apart, so any difference in the algorithm (a dropout mask,
a shuffle, an Adam step, a BatchNorm statistic, a learning rate) would show at once.

In float32, the precision everything trains in, a grouped convolution rounds differently
(about 1e-7), and training amplifies it: Adam scales each step to about the learning rate
whatever the gradient's size, so where a gradient is near zero a rounding difference can
turn one step around. After one short epoch (6 steps) the weights as a whole agree to
TOL32 = 1e-3 relative (L2; two seeds differ by about 1), and no single weight is further
apart than lr × steps, the most Adam can move it: no weight took another path.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from bloodcells.data import Dataset, load_dataset, standardize, to_unit
from bloodcells.errors import BloodcellsError, TrainingDiverged
from bloodcells.training.config import TrainConfig
from bloodcells.training.loop import checkpoint_state, fit, make_model, make_optimizer, restore
from bloodcells.training.stacked.fit import Member, StackCallback, fit_stacked
from bloodcells.training.stacked.layers import Stack, chain_of, stackable
from bloodcells.training.stacked.plan import max_members, member_bytes, split_evenly, stack_key

TOL64 = 1e-9
TOL32 = 1e-3  # relative L2 distance of all weights (see the module docstring)


@pytest.fixture
def tiny(tmp_path):
    """48 training images (6 steps of 8), 18 dev images, 3 classes."""
    from conftest import write_layout

    return load_dataset(write_layout(tmp_path / "tiny", per_class=(16, 6)), cache=False)


@pytest.fixture
def float64(monkeypatch):
    """Models, masks and standardized images in float64 for the duration of a test."""

    def standardized(self, index=None):
        images = self.images if index is None else self.images[index]
        return standardize(to_unit(images).double())

    monkeypatch.setattr(Dataset, "standardized", standardized)
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def config(**overrides) -> TrainConfig:
    return TrainConfig(**{"model": "advanced", "epochs": 1, **overrides})


def members_of(configs, classes=3):
    out = []
    for c in configs:
        model = make_model(c, classes)
        out.append(Member(model, make_optimizer(model, c), c))
    return out


def alone(c: TrainConfig, splits, classes=3):
    model = make_model(c, classes)
    optimizer = make_optimizer(model, c)
    history = fit(model, splits.train, splits.test, c, optimizer=optimizer)
    return model, history, optimizer


def max_difference(a: torch.nn.Module, b: torch.nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return max(
        float((sa[k].double() - sb[k].double()).abs().max()) if sa[k].numel() else 0.0 for k in sa
    )


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_dropout_masks_are_the_ones_fit_draws(layout):
    generators = [torch.Generator().manual_seed(s) for s in (11, 12, 13)]
    models = [make_model(config(seed=s), 3) for s in range(3)]
    stack = Stack(models, torch.device("cpu"), layout)
    x4 = torch.ones(5, 3 * 16, 7, 7).contiguous(memory_format=torch.channels_last)
    x3 = torch.ones(3, 5, 40)
    masks4, masks3 = stack._masks(x4, 0.2, generators), stack._masks(x3, 0.3, generators)
    for k, seed in enumerate((11, 12, 13)):
        torch.manual_seed(seed)  # as train_one_epoch seeds the global generator
        # F.dropout fills its mask in its input's memory order: fit's layout decides it
        alone4 = F.dropout(torch.ones(5, 16, 7, 7).contiguous(memory_format=layout), 0.2, True)
        alone3 = F.dropout(torch.ones(5, 40), 0.3, training=True)
        assert torch.equal(masks4[:, 16 * k : 16 * (k + 1)], alone4)
        assert torch.equal(masks3[k], alone3)


@pytest.mark.parametrize(
    "configs",
    [
        # one architecture, three seeds, three learning rates in one stack
        [config(seed=0), config(seed=1, lr=1e-3), config(seed=2, lr=5e-5), config(seed=3)],
        # every exercise-3 option at once: BatchNorm 2, head dropout, extra layer
        [
            config(seed=s, options={"bn2": True, "head_dropout": 0.3, "extra_fc": 32})
            for s in (0, 5)
        ],
        # the lab's SimpleCNN
        [config(model="simple", seed=s) for s in (0, 1)],
        # a schedule, label smoothing, batch 16 (per-step learning rates per group)
        [
            config(seed=s, lr=lr, batch_size=16, schedule="onecycle", label_smoothing=0.1)
            for s, lr in ((0, 1e-3), (1, 3e-3))
        ],
    ],
    ids=["lrs", "exercise3", "simple", "schedule"],
)
def test_a_stacked_member_is_what_fit_trains_alone_float64(tiny, float64, configs):
    members = members_of(configs)
    fit_stacked(members, tiny.train, tiny.test)
    for c, m in zip(configs, members, strict=True):
        model, history, optimizer = alone(c, tiny)
        assert max_difference(model, m.model) < TOL64, c
        assert m.history.last.train_loss == pytest.approx(history.last.train_loss, abs=TOL64)
        assert m.history.last.dev_loss == pytest.approx(history.last.dev_loss, abs=TOL64)
        assert m.history.last.confusion == history.last.confusion
        # the Adam state too, so the member's checkpoint continues as fit's would
        mine, theirs = m.optimizer.state_dict(), optimizer.state_dict()
        assert mine["param_groups"] == theirs["param_groups"]
        for i, state in theirs["state"].items():
            for key, value in state.items():
                assert torch.allclose(mine["state"][i][key], value, rtol=0, atol=TOL64), key


def relative_distance(a: torch.nn.Module, b: torch.nn.Module) -> float:
    """||a − b|| / ||a|| over every floating-point weight and buffer."""
    sa, sb = a.state_dict(), b.state_dict()
    keys = [k for k in sa if sa[k].is_floating_point()]
    num = sum(float(((sa[k].double() - sb[k].double()) ** 2).sum()) for k in keys)
    return (num / sum(float((sa[k].double() ** 2).sum()) for k in keys)) ** 0.5


def test_a_stacked_member_is_close_to_fit_in_float32(tiny):
    options = {"bn2": True, "head_dropout": 0.3, "extra_fc": 32}
    configs = [config(seed=0), config(seed=1, lr=1e-3), config(seed=2, options=options)]
    stacks = [members_of(configs[:2]), members_of(configs[2:])]
    for stack in stacks:
        fit_stacked(stack, tiny.train, tiny.test)
    steps = 6
    for c, m in zip(configs, [*stacks[0], *stacks[1]], strict=True):
        model, history, _ = alone(c, tiny)
        assert relative_distance(model, m.model) < TOL32
        assert max_difference(model, m.model) < c.learning_rate * steps
        assert m.history.last.train_loss == pytest.approx(history.last.train_loss, rel=1e-3)
    other_seed, *_ = alone(config(seed=7), tiny)
    assert relative_distance(other_seed, stacks[0][0].model) > 0.3  # what a real difference is


def test_a_resumed_stack_continues_exactly(tiny, float64):
    configs = [config(seed=s, epochs=2, lr=lr) for s, lr in ((0, 1e-4), (1, 1e-3))]
    straight = members_of(configs)
    fit_stacked(straight, tiny.train, tiny.test)
    first = members_of([c.with_epochs(1) for c in configs])
    fit_stacked(first, tiny.train, tiny.test)
    resumed = []
    for c, m in zip(configs, first, strict=True):
        m.state.status = "interrupted"
        saved = checkpoint_state(m.state)  # what RunWriter writes to checkpoint.pt
        model, optimizer, history = restore(saved, c, 3)
        resumed.append(Member(model, optimizer, c, history))
    fit_stacked(resumed, tiny.train, tiny.test)
    for a, b in zip(straight, resumed, strict=True):
        assert max_difference(a.model, b.model) < TOL64
        assert a.history.column("train_loss") == pytest.approx(b.history.column("train_loss"))
    # and a member's saved optimizer continues in fit as it does in the stack
    c = configs[1]
    model, optimizer, history = restore(checkpoint_state(first[1].state), c, 3)
    fit(model, tiny.train, tiny.test, c, optimizer=optimizer, history=history)
    assert max_difference(model, straight[1].model) < TOL64


def test_a_member_that_diverges_stops_alone(tiny):
    configs = [config(seed=0, lr=1e-3), config(seed=1, lr=1e12)]
    members = members_of(configs)
    fit_stacked(members, tiny.train, tiny.test)
    good, bad = members
    assert good.state.status == "finished" and good.error is None
    assert bad.state.status == "diverged" and "try a lower learning rate" in bad.error
    assert len(bad.history) == 0
    model, *_ = alone(configs[0], tiny)
    assert relative_distance(model, good.model) < TOL32
    with pytest.raises(TrainingDiverged, match="in epoch 1"):  # as fit does alone
        alone(configs[1], tiny)


def test_stack_callbacks_hear_every_batch_and_epoch(tiny):
    heard = []

    class Ear(StackCallback):
        def on_batch_end(self, state):
            heard.append(("batch", state.epoch, state.batch, state.batches))

        def on_epoch_end(self, state):
            heard.append(("epoch", state.epoch))

    fit_stacked(members_of([config(seed=0, epochs=2)]), tiny.train, tiny.test, [Ear()])
    assert heard.count(("epoch", 1)) == 1 and heard[-1] == ("epoch", 2)
    assert [h for h in heard if h[0] == "batch"][:6] == [("batch", 1, b, 6) for b in range(1, 7)]


def test_only_one_architecture_and_one_target_stack():
    with pytest.raises(BloodcellsError, match="one architecture"):
        Stack(
            [make_model(config(), 3), make_model(config(options={"bn2": True}), 3)],
            torch.device("cpu"),
        )
    with pytest.raises(BloodcellsError, match="one architecture"):
        fit_stacked(members_of([config(), config(epochs=2)]), None, None)  # type: ignore[arg-type]
    assert stack_key(config(lr=1e-3)) == stack_key(config(seed=4))
    assert stack_key(config(options={"bn2": True})) != stack_key(config())
    assert stack_key(config(options={"bn2": False})) == stack_key(config())


def test_what_cannot_stack_says_so():
    assert stackable(config()) and stackable(config(model="simple"))
    assert not stackable(config(model="vgg16", channels=3))  # not a chain of known layers
    assert (
        chain_of(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, groups=1), torch.nn.GELU())) is None
    )


def test_memory_bounds_the_stack_size(monkeypatch):
    per_member = member_bytes(config(), 5)
    assert 1_000_000 < per_member < 50_000_000  # about 150k parameters and batch-8 activations
    monkeypatch.setattr(
        "bloodcells.training.stacked.plan.free_bytes", lambda device: 12 * per_member
    )
    assert max_members(config(), 5, torch.device("cpu")) == 3  # a quarter of the free memory
    monkeypatch.setattr("bloodcells.training.stacked.plan.free_bytes", lambda device: 0)
    assert max_members(config(), 5, torch.device("cpu")) == 1
    assert [len(c) for c in split_evenly(list(range(20)), 16)] == [10, 10]
    assert [len(c) for c in split_evenly(list(range(7)), 3)] == [3, 2, 2]


def test_augmented_configs_train_alone_with_fit():
    assert stackable(TrainConfig(model="advanced"))
    assert not stackable(TrainConfig(model="advanced", augment="flip"))
