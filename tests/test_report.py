"""The HTML report: one offline file rendered from runs, escaped, honest about demo data.

The helpers at the top (fake histories, a FitState to drive callbacks, runs and a finished page
made of them) are shared with test_live.py and test_browser.py.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import plotly.offline
import pytest
import torch
from PIL import Image as PILImage
from torch import nn

from bloodcells.data import load_dataset
from bloodcells.errors import RunError
from bloodcells.evaluation.metrics import classification_metrics
from bloodcells.lab import LabPage
from bloodcells.report.render import render
from bloodcells.report.sources import (
    IMAGES,
    Extras,
    Image,
    load,
    read_extras,
    save_extras,
)
from bloodcells.runs import Run, RunInfo, RunMetrics, new_run_dir, start_training
from bloodcells.training.config import TrainConfig
from bloodcells.training.records import Callback, EpochResult, FitState, History

CLASSES = ["B", "T", "eosinophil", "monocyte", "neutrophil"]
BUNDLE_HEAD = plotly.offline.get_plotlyjs()[:200]
MODELS = {"simple": 0.62, "advanced": 0.86, "vgg16": 0.91}
TITLE = "CNN Lab 1: classification of human blood cells"


def fake_epochs(
    n: int = 5, classes: Sequence[str] = CLASSES, best: float = 0.85, seed: int = 0
) -> list[EpochResult]:
    """Plausible epochs: falling losses, accuracy rising to about `best`, matching matrices."""
    rng = np.random.default_rng(seed)
    k, per_class = len(classes), 40
    epochs = []
    for epoch in range(1, n + 1):
        hit_rate = 1 / k + (best - 1 / k) * (1 - 0.5 ** (epoch * 1.5))
        confusion = np.zeros((k, k), int)
        for true in range(k):
            hits = rng.binomial(per_class, min(hit_rate * rng.uniform(0.9, 1.1), 1.0))
            wrong = rng.multinomial(per_class - hits, rng.dirichlet(np.ones(k - 1)))
            confusion[true] = np.insert(wrong, true, hits)
        accuracy = float(np.trace(confusion) / confusion.sum())
        train_loss = 1.6 * 0.7**epoch + 0.1
        dev_loss = train_loss * 1.15 + 0.02 * epoch
        seconds = float(rng.uniform(2, 3))
        epochs.append(
            EpochResult(epoch, train_loss, dev_loss, accuracy, seconds, confusion.tolist())
        )
    return epochs


def fit_state(classes: Sequence[str] = CLASSES, planned: int = 5):
    """A real FitState around a tiny linear model, for driving callbacks by hand."""
    net = nn.Linear(4, len(classes))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    config = TrainConfig("simple", epochs=planned)
    return FitState(net, optimizer, config, list(classes), History(), torch.device("cpu"))


def png(color: str = "steelblue", size: tuple[int, int] = (40, 30)) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def dataset_summary(classes: Sequence[str] = CLASSES) -> dict:
    return {
        "root": "data/demo",
        "classes": list(classes),
        "class_to_idx": {c: i for i, c in enumerate(classes)},
        "counts": {
            "train": {c: 200 + 10 * i for i, c in enumerate(classes)},
            "test": {c: 40 for c in classes},
        },
        "sources": {"train": {"L 32x32": 1000}, "test": {"L 32x32": 200}},
        "transform": {"size": 32, "channels": 1},
        "problems": [],
    }


def fake_run(
    model: str = "simple",
    best: float = 0.8,
    seed: int = 0,
    n_epochs: int = 4,
    classes: Sequence[str] = CLASSES,
    folder: str | None = None,
    status: str = "finished",
) -> Run:
    """A Run as load_run gives it, of fake epochs; its folder need not exist."""
    epochs = fake_epochs(n_epochs, classes, best, seed)
    matrix = np.asarray(epochs[-1].confusion)
    true, pred = np.nonzero(matrix)
    counts = matrix[true, pred]
    metrics = classification_metrics(np.repeat(true, counts), np.repeat(pred, counts), classes)
    seconds = sum(e.seconds for e in epochs)
    metrics |= {"status": status, "epoch": n_epochs, "epochs": n_epochs, "train_seconds": seconds}
    info = RunInfo(
        config=TrainConfig(model=model, epochs=n_epochs),
        classes=list(classes),
        data_root="data/demo",
        parameters=1000 * (seed + 1),
        device="cpu",
        learning_rate=0.001,
        command=["bloodcells", "train", "--model", model],
        versions={"bloodcells": "0.1.0", "torch": "2"},
    )
    path = Path("runs") / (folder or model)
    return Run(path, info, RunMetrics.from_dict(metrics), History(epochs))


def lab_runs(models: dict[str, float] = MODELS, **options) -> list[Run]:
    pairs = enumerate(models.items())
    return [fake_run(name, best, seed, **options) for seed, (name, best) in pairs]


def lab_extras(synthetic: bool = True, images: Sequence[str] = IMAGES, **changes) -> Extras:
    """The extras a finished lab has: dataset, a note, the images named in `images`."""
    colors = {"samples": "steelblue", "predictions": "white", "top_losses": "gray"}
    extras = Extras(
        title=TITLE,
        synthetic=synthetic,
        dataset=dataset_summary(),
        notes=["VGG16 trained on a CPU subset"],
        meta={"command": "bloodcells lab", "seed": 0, "device": "cpu", "data_root": "data"},
        images={k: Image(png(colors.get(k, "orange")), f"the {k}") for k in images},
        sources=["runs/lab"],
    )
    for key, value in changes.items():
        setattr(extras, key, value)
    return extras


def write_page(path: Path, runs: Sequence[Run], extras: Extras, live: bool = False) -> Path:
    path.write_text(render(runs, extras, live), encoding="utf-8")
    return path


def without_bundle(page: str) -> str:
    """The page minus the inline plotly.js (which holds markup strings of its own)."""
    start = page.index(BUNDLE_HEAD)
    return page[:start] + page[page.index("</script>", start) :]


def section(page: str, anchor: str) -> str:
    match = re.search(rf'<section id="{anchor}">(.*?)</section>', page, re.S)
    assert match, f"no section {anchor}"
    return match.group(1)


@pytest.fixture(scope="module")
def finished() -> tuple[list[Run], str]:
    runs = lab_runs()
    return runs, render(runs, lab_extras())


def test_report_is_one_offline_file(finished):
    _, page = finished
    assert page.count(BUNDLE_HEAD) == 1
    rest = without_bundle(page)
    assert not re.search(r"<script[^>]*\ssrc\s*=", rest, re.I)
    assert not re.search(r"<link[^>]*href\s*=\s*[\"']?https?:", rest, re.I)
    assert "report.css" not in page and "--accent: #0969da" in page  # the style is inlined


def test_figures_are_drawn_by_the_inline_bundle(finished):
    _, page = finished
    head, body = page.split("</head>")
    assert BUNDLE_HEAD in head
    # one accuracy chart, then a loss chart and a confusion heatmap per model
    assert body.count('class="plotly-graph-div"') == 1 + 2 * len(MODELS)
    assert body.count("Plotly.newPlot(") == 1 + 2 * len(MODELS)


def test_the_same_runs_give_the_same_page_but_for_the_time():
    pages = [render(lab_runs(), lab_extras()) for _ in range(2)]
    stamp = re.compile(r"updated \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S*")
    assert stamp.sub("", pages[0]) == stamp.sub("", pages[1])


def test_user_strings_are_escaped():
    evil = "</script><script>alert(1)</script>"
    classes = ["<b>bold", "T & B", evil]
    runs = [
        fake_run("simple", 0.7, 0, 2, classes, folder="<i>net"),
        fake_run("simple", 0.6, 1, 2, classes, folder="plain"),  # named by folder: same model
    ]
    extras = lab_extras(
        dataset=dataset_summary(classes), notes=[evil], title="<u>lab", sources=["<s>"]
    )
    rest = without_bundle(render(runs, extras))
    assert "&lt;b&gt;bold" in rest and "<b>bold" not in rest
    assert "&lt;i&gt;net" in rest and "<i>net" not in rest
    assert "&lt;u&gt;lab" in rest and "<u>lab" not in rest
    assert "&lt;script&gt;alert(1)" in rest and "<script>alert" not in rest
    # In the figures' JSON "<" is written \u003c: nothing in it can close its <script> element.
    scripts = re.findall(r"<script>(.*?)</script>", rest, re.S)
    assert len(scripts) == 1 + 2 * len(runs)
    assert all("</" not in s and "<script" not in s for s in scripts)
    assert "\\u003c/extra\\u003e" in scripts[-1]  # plotly's own <extra></extra> tag
    assert "alert(1)" in scripts[-1]  # the class name, as plotly shows text


def test_synthetic_banner_only_for_synthetic_data():
    runs = lab_runs({"simple": 0.6})
    demo = render(runs, lab_extras(synthetic=True))
    real = render(runs, lab_extras(synthetic=False))
    header = demo.split("<header", 1)[1].split("</header>")[0]
    assert 'class="banner"' in header and "Synthetic demo data" in header
    assert "<title>[synthetic]" in demo
    assert 'class="banner"' not in real and "Synthetic demo data" not in real


def test_comparison_lists_every_model_and_marks_the_best(finished):
    runs, page = finished
    table = section(page, "comparison")
    for run in runs:
        assert run.config.model in table
        assert f"{run.metrics.accuracy:.1%}" in table
        assert f"{run.metrics.balanced_accuracy:.1%}" in table
    best = max(runs, key=lambda r: r.metrics.accuracy).config.model
    assert re.search(rf'<tr class="best"><td><a [^>]*>{best}</a>', table)
    assert "VGG16 trained on a CPU subset" in table
    assert "guessing uniformly scores 20.0%" in table


def test_images_are_embedded_png_data(finished):
    _, page = finished
    sources = re.findall(r'<img src="data:image/png;base64,([^"]+)"', page)
    assert len(sources) == 4  # sample grid, predictions, Grad-CAM, top losses
    assert all(base64.b64decode(s).startswith(b"\x89PNG\r\n\x1a\n") for s in sources)
    assert not re.search(r'<img src="(?!data:image/png;base64,)', page)


def test_missing_figures_say_how_to_make_them():
    page = render(lab_runs({"simple": 0.6}), lab_extras(images=("samples",)))
    hint = "bloodcells report runs/lab --explain"
    for anchor in ("predictions", "gradcam", "mistakes"):
        part = section(page, anchor)
        assert "Not made: run" in part and hint in part and "<img" not in part
    assert "Most-confused pairs" in section(page, "mistakes")  # from metrics.json, no model


def test_runs_alone_make_a_page_with_their_own_commands():
    runs = [fake_run("simple", 0.6, 0), fake_run("advanced", 0.8, 1)]
    page = render(runs, Extras(sources=["a", "b"]))
    assert "No dataset summary in this report. The runs were trained on data/demo." in page
    assert "bloodcells report a b --explain" in page
    reproduce = section(page, "reproduce")
    assert "bloodcells train --model simple" in reproduce and "runs/advanced" in reproduce


def test_runs_of_other_classes_are_shown_side_by_side():
    runs = [fake_run("simple", 0.6, 0), fake_run("advanced", 0.8, 1, classes=["x", "y"])]
    page = render(runs, Extras())
    assert page.count('class="plotly-graph-div"') == 5
    assert "Dev recall per class" not in page  # no common classes to compare recall on


def test_live_page_shows_queued_models_and_reloads():
    runs = [fake_run("simple", 0.6, 0, status="running")]
    extras = lab_extras(images=("samples",), planned={"simple": 5, "advanced": 5, "vgg16": 3})
    page = render(runs, extras, live=True)
    assert '<meta http-equiv="refresh" content="5">' in page
    assert "● live — simple: training, epoch" in page
    assert "queued" in section(page, "comparison") and "Waiting to train." in page
    assert "appear when training is done" in section(page, "mistakes")
    done = render([fake_run("simple", 0.6, 0)], extras, live=True)
    assert "● live — advanced: training, epoch 1 of 5" in done  # the next one has started
    final = render([fake_run("simple", 0.6, 0)], extras)
    assert "http-equiv" not in final and "not trained" in final


def test_a_stopped_run_shows_in_the_status():
    page = render([fake_run("simple", 0.6, status="interrupted")], Extras())
    assert "stopped: simple interrupted" in page.split("</header>")[0]


def test_extras_are_kept_in_the_folder(tmp_path):
    extras = lab_extras(planned={"simple": 5}, explained="20260101-simple")
    save_extras(tmp_path, extras)
    back = read_extras(tmp_path)
    assert back == Extras(**{**vars(extras), "sources": [], "skipped": []})
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == sorted(
        f"{k}.png" for k in IMAGES
    )


@pytest.mark.parametrize("make", ["missing", "file", "empty"])
def test_a_path_without_runs_is_one_line(tmp_path, make):
    path = tmp_path / "thing"
    if make == "file":
        path.write_text("x")
    elif make == "empty":
        path.mkdir()
    with pytest.raises(RunError) as error:
        load([path])
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_the_number_of_runs_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr("bloodcells.report.sources.MAX_RUNS", 2)
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")  # counted before any is read
    with pytest.raises(RunError, match="more than 2 runs"):
        load([tmp_path])


def test_a_damaged_lab_file_is_one_line(tmp_path):
    (tmp_path / "lab.json").write_text("[1, 2")
    with pytest.raises(RunError, match=r"lab\.json: unreadable"):
        load([tmp_path])


class Pages(Callback):
    """Keeps the page as it is after every epoch (LabPage, before it, has written it)."""

    def __init__(self, path: Path, stop_at: int | None = None) -> None:
        self.path, self.stop_at, self.pages = path, stop_at, []

    def on_epoch_end(self, state: FitState) -> None:
        self.pages.append(self.path.read_text())
        if state.epoch == self.stop_at:
            raise KeyboardInterrupt


@pytest.fixture
def easy(easy_root):
    return load_dataset(easy_root, cache=False)


def test_the_lab_page_is_rendered_from_the_runs_after_every_epoch(easy, tmp_path):
    save_extras(tmp_path, Extras(title="lab", planned={"simple": 3, "advanced": 1}))
    page = LabPage(tmp_path)
    pages = Pages(page.path)
    config = TrainConfig("simple", epochs=3, device="cpu")
    run = start_training(easy, config, callbacks=[page, pages], run_dir=new_run_dir(tmp_path, "s"))
    assert all('http-equiv="refresh"' in p for p in pages.pages)
    for done, html in enumerate(pages.pages, start=1):  # the epochs column, per epoch
        assert f'<td class="num">{done} of 3</td>' in section(html, "comparison")
    finished = page.path.read_text()
    assert 'http-equiv="refresh"' in finished  # the next model may follow
    assert "● live — advanced: training, epoch 1 of 1" in finished
    assert f"{run.metrics.accuracy:.1%}" in section(finished, "comparison")
    page.write(live=False)
    assert "http-equiv" not in page.path.read_text()
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["lab.json", "report.html"]


def test_an_interrupted_fit_ends_the_refresh(easy, tmp_path):
    page = LabPage(tmp_path)
    config = TrainConfig("simple", epochs=3, device="cpu")
    callbacks = [page, Pages(page.path, stop_at=2)]
    with pytest.raises(KeyboardInterrupt):
        start_training(easy, config, callbacks=callbacks, run_dir=new_run_dir(tmp_path, "s"))
    html = page.path.read_text()
    assert "http-equiv" not in html
    assert "stopped: simple interrupted" in html.split("</header>")[0]
    assert "interrupted" in section(html, "comparison")
