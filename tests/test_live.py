"""Live plots: the notebook LivePlot's figures per epoch, and PlotFiles' PNGs in the run folder."""

from __future__ import annotations

import numpy as np
import pytest
from test_report import CLASSES, fake_epochs, fit_state
from typer.testing import CliRunner

from bloodcells.cli import app
from bloodcells.evaluation.metrics import row_percentages
from bloodcells.viz.live import LivePlot, PlotFiles

PNG = b"\x89PNG\r\n\x1a\n"


def test_liveplot_follows_every_epoch():
    plot = LivePlot()
    state = fit_state(planned=5)
    plot.on_fit_start(state)
    for result in fake_epochs(3):
        state.history.epochs.append(result)
        plot.on_epoch_end(state)
        done = state.history.epochs
        train, dev = plot.loss.data
        assert list(train.x) == list(dev.x) == [e.epoch for e in done]
        assert list(train.y) == [e.train_loss for e in done]
        assert list(dev.y) == [e.dev_loss for e in done]
        heatmap = plot.matrix.data[0]
        share = row_percentages(result.confusion)
        assert np.allclose(np.asarray(heatmap.z), share)
        assert [list(row) for row in heatmap.text] == [
            [f"{100 * v:.0f}%" for v in row] for row in share
        ]
        assert list(heatmap.x) == list(heatmap.y) == CLASSES
        assert f"epoch {result.epoch}" in plot.matrix.layout.title.text
    assert list(plot.loss.layout.xaxis.range) == [0.5, 5.5]  # room for every planned epoch
    assert plot.matrix.layout.yaxis.autorange == "reversed"  # true classes top to bottom
    assert "simple" in plot.loss.layout.title.text  # titled by the model when not given


def test_liveplot_has_class_axes_before_training():
    plot = LivePlot(class_names=["B", "T"], title="advanced")
    heatmap = plot.matrix.data[0]
    assert list(heatmap.x) == list(heatmap.y) == ["B", "T"]
    assert np.asarray(heatmap.z).tolist() == [[0, 0], [0, 0]]
    assert plot.loss.layout.title.text == "advanced: loss"


def test_each_model_keeps_its_own_liveplot():
    first, second = LivePlot(title="simple"), LivePlot(title="advanced")
    state = fit_state()
    first.on_fit_start(state)
    state.history.epochs.extend(fake_epochs(2))
    first.on_epoch_end(state)
    assert list(first.loss.data[0].x) == [1, 2]
    assert list(second.loss.data[0].x) == []


def test_liveplot_shows_a_resumed_history_at_fit_start():
    plot = LivePlot()
    state = fit_state()
    state.history.epochs.extend(fake_epochs(2))
    plot.on_fit_start(state)
    assert list(plot.loss.data[1].x) == [1, 2]


def test_liveplot_shows_markup_in_class_names_literally():
    plot = LivePlot(class_names=["<b>bold", "T"])
    assert list(plot.matrix.data[0].x) == ["&lt;b&gt;bold", "T"]


def test_liveplot_outside_jupyter_displays_nothing(capsys):
    plot = LivePlot()
    assert plot.displayed is False
    assert capsys.readouterr().out == ""


def test_liveplot_displays_its_widgets_in_a_notebook_kernel():
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    code = "from bloodcells.viz.live import LivePlot\nplot = LivePlot(['B', 'T'])\nplot.displayed"
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3").execute()
    outputs = notebook.cells[0].outputs
    widget_view = "application/vnd.jupyter.widget-view+json"
    widgets = [o for o in outputs if widget_view in o.get("data", {})]
    assert len(widgets) == 2  # the loss curves and the confusion matrix
    assert outputs[-1]["data"]["text/plain"] == "True"


def test_plot_files_are_kept_current(tmp_path):
    plots = PlotFiles(tmp_path)
    state = fit_state()
    epochs = fake_epochs(2)
    state.history.epochs.append(epochs[0])
    plots.on_epoch_end(state)
    first = {name: (tmp_path / name).read_bytes() for name in ("loss.png", "confusion.png")}
    assert all(data.startswith(PNG) for data in first.values())
    state.history.epochs.append(epochs[1])
    plots.on_epoch_end(state)
    for name, before in first.items():
        assert (tmp_path / name).read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["confusion.png", "loss.png"]


def test_train_plot_flag_writes_the_pngs(easy_root, tmp_path):
    runner, runs = CliRunner(), tmp_path / "runs"
    args = ["train", "-d", easy_root, "-m", "simple", "--epochs", "1", "--out", runs, "--plot"]
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    (run,) = runs.iterdir()
    loss = (run / "loss.png").read_bytes()
    assert loss.startswith(PNG) and (run / "confusion.png").read_bytes().startswith(PNG)
    again = runner.invoke(app, ["train", "--resume", str(run), "--epochs", "2", "--plot"])
    assert again.exit_code == 0, again.output
    assert (run / "loss.png").read_bytes() != loss  # the resumed run keeps drawing
    assert not [p.name for p in run.iterdir() if ".tmp" in p.name]


def test_plot_files_are_drawn_at_the_figures_dpi(tmp_path):
    from PIL import Image

    from bloodcells.viz.grids import DPI

    plots = PlotFiles(tmp_path)
    state = fit_state()
    state.history.epochs.extend(fake_epochs(2))
    plots.on_epoch_end(state)
    with Image.open(tmp_path / "loss.png") as image:
        assert image.size == (6 * DPI, 4 * DPI)  # a 6×4 inch figure, as every figure PNG
