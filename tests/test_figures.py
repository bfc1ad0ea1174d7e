"""Image grids: dataset samples, predictions on a random batch, top losses, and their commands."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import write_layout
from PIL import Image
from torch import nn
from torch.nn import functional as F
from typer.testing import CliRunner

from bloodcells.cli import app
from bloodcells.data import Transform, load_dataset
from bloodcells.evaluation.core import evaluate
from bloodcells.viz.grids import (
    WRONG,
    display_image,
    figure_png,
    prediction_grid,
    sample_grid,
    save_figure,
    top_losses_figure,
)


class Always(nn.Module):
    """A model that answers the same class for every image."""

    def __init__(self, k: int, num_classes: int = 3) -> None:
        super().__init__()
        self.logits = nn.Parameter(F.one_hot(torch.tensor(k), num_classes).float() * 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(len(x), -1)


def shown(ax) -> np.ndarray:
    return np.asarray(ax.images[0].get_array())


def test_sample_grid_has_a_row_of_each_class_from_that_class(trained):
    train = trained[1].train
    fig = sample_grid(train, per_class=5, seed=1)
    rows = np.array(fig.axes).reshape(3, 5)
    for k, (row, cls) in enumerate(zip(rows, train.classes, strict=True)):
        assert row[0].get_ylabel() == f"{cls}\n(40 images)"
        members = [display_image(train.standardized(slice(i, i + 1))[0]) for i in range(120)]
        members = [m for m, label in zip(members, train.labels, strict=True) if label == k]
        for ax in row:  # every image shown is one of this class's images
            assert any(np.allclose(shown(ax), m) for m in members)
    again = np.array(sample_grid(train, per_class=5, seed=1).axes)
    other = np.array(sample_grid(train, per_class=5, seed=2).axes)
    assert all(np.array_equal(shown(a), shown(b)) for a, b in zip(fig.axes, again, strict=True))
    assert not all(np.array_equal(shown(a), shown(b)) for a, b in zip(fig.axes, other, strict=True))


def test_sample_grid_shows_rgb_as_rgb(tmp_path):
    root = write_layout(tmp_path / "d", per_class=(4, 1))
    gray = load_dataset(root, cache=False)
    rgb = load_dataset(root, Transform(32, 3), cache=False)
    assert shown(sample_grid(gray.train, per_class=2).axes[0]).ndim == 2
    assert shown(sample_grid(rgb.train, per_class=2).axes[0]).shape == (32, 32, 3)


def test_prediction_grid_marks_exactly_the_wrong_ones_in_red(trained):
    test = trained[1].test
    fig = prediction_grid(Always(1), test, n=12, seed=0)
    titles = [ax.get_title() for ax in fig.axes if ax.images]
    assert len(titles) == 12 and all(t.endswith(f"pred: {test.classes[1]} (100%)") for t in titles)
    red = [ax.title.get_color() == WRONG for ax in fig.axes if ax.images]
    wrong = [not t.startswith(f"true: {test.classes[1]}\n") for t in titles]
    assert red == wrong and any(wrong) and not all(wrong)
    assert f"{wrong.count(False)} of 12 right" in fig._suptitle.get_text()


def test_top_losses_are_the_highest_cross_entropies_highest_first(trained):
    run, splits = trained
    model, test = run.load_model(), splits.test
    rows = evaluate(model, test).top_losses(7)
    with torch.no_grad():
        logits = model(test.standardized())
    losses = F.cross_entropy(logits, test.labels, reduction="none")
    expected = torch.argsort(losses, descending=True)[:7].tolist()
    assert [row["index"] for row in rows] == expected
    for row in rows:
        i = row["index"]
        assert row["loss"] == pytest.approx(float(losses[i]), rel=1e-4, abs=1e-5)
        assert row["path"] == test.paths[i] and row["true"] == test.classes[test.labels[i]]
        assert row["predicted"] == test.classes[int(logits[i].argmax())]
        assert row["probability"] == pytest.approx(float(logits[i].softmax(0).max()), abs=1e-6)


def test_wrong_answers_rank_above_right_ones(trained):
    test = trained[1].test
    rows = evaluate(Always(0), test).top_losses(len(test))
    assert {r["true"] for r in rows[:24]} == set(test.classes[1:])  # wrong at p ≈ 1 first
    assert {r["true"] for r in rows[24:]} == {test.classes[0]}


def test_top_losses_figure_shows_each_image_with_its_loss(trained):
    run, splits = trained
    fig = top_losses_figure(evaluate(run.load_model(), splits.test), splits.test, n=4)
    axes = [ax for ax in fig.axes if ax.images]
    assert len(axes) == 4 and all("\nloss " in ax.get_title() for ax in axes)
    assert axes[0].get_xlabel().endswith(".png")
    empty = splits.test.subset([])
    with pytest.raises(Exception, match="no images"):
        top_losses_figure(evaluate(run.load_model(), empty), empty)


def test_save_figure_makes_folders_and_figure_png_gives_png_bytes(trained, tmp_path):
    fig = sample_grid(trained[1].test, per_class=2)
    path = save_figure(fig, tmp_path / "a" / "b" / "grid.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        assert im.width > 300 and im.height > 300
    assert figure_png(fig)[:8] == b"\x89PNG\r\n\x1a\n"


def test_data_preview_command_writes_the_grid(tmp_path):
    root = write_layout(tmp_path / "d", per_class=(6, 2))
    out = tmp_path / "grid.png"
    result = CliRunner().invoke(
        app, ["data", "preview", str(root), "--per-class", "4", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert str(out) in result.output and out.read_bytes()[:4] == b"\x89PNG"
    result = CliRunner().invoke(app, ["data", "preview", str(tmp_path / "nope"), "-o", str(out)])
    assert result.exit_code == 2 and "no such folder" in result.output


def test_mistakes_command_lists_top_losses_and_confused_pairs(trained, tmp_path):
    run, splits = trained
    out = tmp_path / "top.png"
    result = CliRunner().invoke(app, ["mistakes", str(run.path), "-n", "3", "-o", str(out)])
    assert result.exit_code == 0, result.output
    expected = evaluate(run.load_model(), splits.test).top_losses(3)
    assert result.output.count("test/") == 3
    for row in expected:
        assert row["path"].rsplit("/", 1)[-1][:10] in result.output
    mistakes = evaluate(run.load_model(), splits.test).most_confused()
    assert ("most confused classes" in result.output) == bool(mistakes)
    assert ("no mistakes on the dev set" in result.output) == (not mistakes)
    assert out.read_bytes()[:4] == b"\x89PNG"
