"""The HTML lab report: one offline file, rewritten per epoch, escaped, honest about demo data.

The helpers at the top (fake histories, a FitState to drive callbacks, a finished report) are
shared with test_live.py and test_browser.py.
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
from PIL import Image
from torch import nn

from bloodcells.data import Dataset
from bloodcells.metrics import row_percentages
from bloodcells.report import LabReport
from bloodcells.train import EpochResult, FitState, History, TrainConfig, fit

CLASSES = ["B", "T", "eosinophil", "monocyte", "neutrophil"]
BUNDLE_HEAD = plotly.offline.get_plotlyjs()[:200]


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


def drive(callback, state: FitState, epochs: Sequence[EpochResult], end: str = "finished"):
    """What fit() does to a callback: start, one call per epoch, end with status `end`."""
    callback.on_fit_start(state)
    for result in epochs:
        state.epoch = result.epoch
        state.history.epochs.append(result)
        callback.on_epoch_end(state)
    state.status = end
    callback.on_fit_end(state)


def png(color: str = "steelblue", size: tuple[int, int] = (40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
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


def model_metrics(epochs: Sequence[EpochResult], classes: Sequence[str]) -> dict:
    last = epochs[-1]
    recall = np.diag(row_percentages(last.confusion))
    return {
        "accuracy": last.dev_accuracy,
        "balanced_accuracy": float(recall.mean()),
        "chance": 1 / len(classes),
        "majority_baseline": 0.2,
        "classes": list(classes),
        "confusion_matrix": last.confusion,
    }


MODELS = {"simple": 0.62, "advanced": 0.86, "vgg16": 0.91}
ONE = {"simple": 0.6}


def build_report(
    path: Path,
    synthetic: bool = True,
    classes: Sequence[str] = CLASSES,
    models: dict[str, float] = MODELS,
    n_epochs: int = 5,
    gradcam: bool = True,
    sample_grid: bytes | None = None,
) -> LabReport:
    """A finished report of `models` (name: final accuracy) trained on fake histories."""
    report = LabReport(
        path,
        "CNN Lab 1: classification of human blood cells",
        synthetic=synthetic,
        meta={"command": ["bloodcells", "lab"], "seed": 0, "device": "cpu", "data_root": "data"},
    )
    report.set_dataset(dataset_summary(classes), sample_grid or png())
    for seed, (name, best) in enumerate(models.items()):
        epochs = fake_epochs(n_epochs, classes, best, seed)
        drive(report.model_callback(name), fit_state(classes, n_epochs), epochs)
        seconds = sum(e.seconds for e in epochs)
        metrics = model_metrics(epochs, classes)
        report.set_model_result(name, metrics, 1000 * (seed + 1), seconds, n_epochs, f"runs/{name}")
    report.set_predictions(png("white"), "dev images, best model")
    if gradcam:
        report.set_gradcam(png("orange"), "Grad-CAM of the advanced model, last conv layer")
    report.set_mistakes(png("gray"), [(classes[0], classes[1], 7), (classes[-1], classes[-2], 3)])
    report.add_note("VGG16 trained on a CPU subset")
    report.finish()
    return report


def without_bundle(page: str) -> str:
    """The page minus the inline plotly.js (which holds markup strings of its own)."""
    start = page.index(BUNDLE_HEAD)
    return page[:start] + page[page.index("</script>", start) :]


def section(page: str, anchor: str) -> str:
    match = re.search(rf'<section id="{anchor}">(.*?)</section>', page, re.S)
    assert match, f"no section {anchor}"
    return match.group(1)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[LabReport, str]:
    report = build_report(tmp_path_factory.mktemp("finished") / "report.html")
    return report, report.path.read_text(encoding="utf-8")


def test_report_is_one_offline_file(finished):
    report, page = finished
    assert report.path.is_file()
    assert page.count(BUNDLE_HEAD) == 1
    rest = without_bundle(page)
    assert not re.search(r"<script[^>]*\ssrc\s*=", rest, re.I)
    assert not re.search(r"<link[^>]*href\s*=\s*[\"']?https?:", rest, re.I)


def test_figures_are_drawn_by_the_inline_bundle(finished):
    _, page = finished
    head, body = page.split("</head>")
    assert BUNDLE_HEAD in head
    # one accuracy chart, then a loss chart and a confusion heatmap per model
    assert body.count('class="plotly-graph-div"') == 1 + 2 * len(MODELS)
    assert body.count("Plotly.newPlot(") == 1 + 2 * len(MODELS)


def test_refresh_tag_while_training_and_not_after_finish(tmp_path):
    report = LabReport(tmp_path / "report.html", "lab")
    state = fit_state(planned=3)
    callback = report.model_callback("simple")
    callback.on_fit_start(state)
    pages = []
    for result in fake_epochs(3):
        state.epoch = result.epoch
        state.history.epochs.append(result)
        callback.on_epoch_end(state)
        pages.append(report.path.read_text())
    assert all('http-equiv="refresh"' in p for p in pages)
    assert "1 of 3" in pages[0] and "2 of 3" in pages[1]  # rewritten after every epoch
    state.status = "finished"
    callback.on_fit_end(state)
    assert 'http-equiv="refresh"' in report.path.read_text()  # the next model may follow
    report.finish()
    assert "http-equiv" not in report.path.read_text()


def test_an_interrupted_fit_ends_the_refresh(tmp_path):
    report = LabReport(tmp_path / "report.html", "lab")
    drive(report.model_callback("simple"), fit_state(), fake_epochs(2), end="interrupted")
    page = report.path.read_text()
    assert "http-equiv" not in page
    assert "stopped: simple interrupted" in page.split("</header>")[0]
    assert "interrupted" in section(page, "comparison")


def test_a_real_fit_writes_the_report_through_its_callback(tmp_path):
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (24, 1, 32, 32), dtype=torch.uint8, generator=generator)
    labels = torch.arange(24) % 3
    data = Dataset(images, labels, ["a", "b", "c"], [f"{i}.png" for i in range(24)])
    report = LabReport(tmp_path / "report.html", "lab")
    config = TrainConfig("simple", epochs=2, batch_size=8, device="cpu")
    net = nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 3))
    history = fit(net, data, data, config, [report.model_callback("simple")])
    page = report.path.read_text()
    assert f"{history.last.dev_accuracy:.1%}" in section(page, "comparison")
    assert "Plotly.newPlot(" in section(page, "models")


def test_user_strings_are_escaped(tmp_path):
    classes = ["<b>bold", "T & B", "plain"]
    report = build_report(
        tmp_path / "report.html", classes=classes, models={"<i>net": 0.7}, n_epochs=2
    )
    report.add_note("<script>alert(1)</script>")
    report.finish()
    rest = without_bundle(report.path.read_text())
    assert "&lt;b&gt;bold" in rest and "<b>bold" not in rest
    assert "&lt;i&gt;net" in rest and "<i>net" not in rest
    assert "&lt;script&gt;alert(1)" in rest and "<script>alert" not in rest


def test_synthetic_banner_only_for_synthetic_data(tmp_path):
    demo = build_report(tmp_path / "demo.html", True, models=ONE, n_epochs=2).path.read_text()
    real = build_report(tmp_path / "real.html", False, models=ONE, n_epochs=2).path.read_text()
    header = demo.split("<header", 1)[1].split("</header>")[0]
    assert 'class="banner"' in header and "Synthetic demo data" in header
    assert "<title>[synthetic]" in demo
    assert 'class="banner"' not in real and "Synthetic demo data" not in real


def test_comparison_lists_every_model_and_marks_the_best(finished):
    report, page = finished
    table = section(page, "comparison")
    for name, entry in report.models.items():
        metrics = entry.result.metrics
        assert name in table
        assert f"{metrics['accuracy']:.1%}" in table
        assert f"{metrics['balanced_accuracy']:.1%}" in table
    best = max(report.models.values(), key=lambda e: e.result.metrics["accuracy"])
    assert re.search(rf'<tr class="best"><td><a [^>]*>{best.name}</a>', table)


def test_images_are_embedded_png_data(finished):
    _, page = finished
    sources = re.findall(r'<img src="data:image/png;base64,([^"]+)"', page)
    assert len(sources) == 4  # sample grid, predictions, Grad-CAM, top losses
    assert all(base64.b64decode(s).startswith(b"\x89PNG\r\n\x1a\n") for s in sources)
    assert not re.search(r'<img src="(?!data:image/png;base64,)', page)


def test_gradcam_placeholder_when_none_is_given(tmp_path):
    page = build_report(tmp_path / "report.html", models=ONE, gradcam=False).path.read_text()
    gradcam = section(page, "gradcam")
    assert "No Grad-CAM grid" in gradcam and "<img" not in gradcam


def test_writes_are_atomic(tmp_path):
    build_report(tmp_path / "report.html", models=ONE, n_epochs=3)  # a write per epoch
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


def test_context_manager_finishes_and_notes_a_failure(tmp_path):
    with pytest.raises(RuntimeError), LabReport(tmp_path / "report.html", "lab") as report:
        report.write(live=True)
        raise RuntimeError("out of memory")
    page = report.path.read_text()
    assert "http-equiv" not in page
    assert "RuntimeError: out of memory" in page
