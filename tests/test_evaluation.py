"""Evaluation: one object answers accuracy, confusion, metrics, top losses and confused pairs."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, confusion_matrix
from torch.nn import functional as F

from bloodcells.data import standardize
from bloodcells.evaluation.core import Evaluation, energy_score, evaluate, evaluate_tensors

CLASSES = ["a", "b", "c"]


def made_up(seed: int = 0, n: int = 60) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, 3, generator=generator) * 3
    labels = torch.randint(0, 3, (n,), generator=generator)
    return logits, labels


def test_metrics_and_confusion_agree_with_sklearn():
    logits, labels = made_up()
    result = Evaluation(logits.softmax(1), labels, CLASSES)
    predictions = logits.argmax(1)
    assert result.confusion() == confusion_matrix(labels, predictions).tolist()
    metrics = result.metrics()
    assert metrics["accuracy"] == pytest.approx(float((predictions == labels).float().mean()))
    assert metrics["balanced_accuracy"] == pytest.approx(
        balanced_accuracy_score(labels, predictions)
    )
    assert metrics["confusion_matrix"] == result.confusion()
    assert metrics["loss"] == pytest.approx(float(F.cross_entropy(logits, labels)), rel=1e-5)


def test_top_losses_rank_the_most_confident_mistakes_first():
    logits, labels = made_up(1)
    result = Evaluation(logits.softmax(1), labels, CLASSES, [f"img{i}.png" for i in range(60)])
    rows = result.top_losses(5)
    expected = F.cross_entropy(logits, labels, reduction="none").argsort(descending=True)[:5]
    assert [row["index"] for row in rows] == expected.tolist()
    assert [row["path"] for row in rows] == [f"img{i}.png" for i in expected.tolist()]
    assert all(row["true"] != row["predicted"] for row in rows)
    assert rows == sorted(rows, key=lambda r: -r["loss"])


def test_most_confused_are_the_largest_off_diagonal_counts():
    logits, labels = made_up(2)
    result = Evaluation(logits.softmax(1), labels, CLASSES)
    matrix = result.confusion()
    pairs = result.most_confused(top=10)
    for true, pred, count in pairs:
        assert true != pred and matrix[CLASSES.index(true)][CLASSES.index(pred)] == count
    assert [c for _, _, c in pairs] == sorted((c for _, _, c in pairs), reverse=True)
    assert sum(c for _, _, c in pairs) == len(labels) - sum(matrix[i][i] for i in range(3))


class Fixed(torch.nn.Module):
    """Returns fixed logits whatever the images (its input's batch index picks the row)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.table = logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[x[:, 0, 0, 0].long()]


def test_losses_come_from_the_logits_even_where_softmax_rounds_to_zero():
    logits = torch.tensor([[200.0, 0.0, 0.0], [0.0, 5.0, 0.0]])
    images = torch.arange(2, dtype=torch.float32).view(2, 1, 1, 1)
    result = evaluate_tensors(Fixed(logits), images, torch.tensor([1, 1]), CLASSES)
    assert float(result.probabilities[0, 1]) == 0.0  # underflows in float32
    assert float(result.losses[0]) == pytest.approx(200.0)  # still the true loss
    assert result.loss == pytest.approx(float(F.cross_entropy(logits, torch.tensor([1, 1]))))


def test_evaluate_is_what_the_run_recorded_for_its_last_epoch(trained):
    run, splits = trained
    result = evaluate(run.load_model(), splits.test)
    assert result.paths == splits.test.paths and result.classes == run.classes
    assert result.confusion() == run.metrics.confusion_matrix
    assert result.metrics()["accuracy"] == pytest.approx(run.metrics.accuracy)
    assert result.loss == pytest.approx(run.metrics.dev_loss, rel=1e-5)


def test_an_empty_dataset_evaluates_to_nothing(trained):
    run, splits = trained
    empty = splits.test.subset([])
    result = evaluate(run.load_model(), empty)
    assert len(result) == 0 and result.top_losses(3) == [] and result.accuracy == 0.0


def test_the_run_records_where_unlike_training_begins(trained):
    run, splits = trained
    recorded = run.metrics.unlike_training
    assert recorded.score == "energy" and recorded.percentile == 95.0
    result = evaluate(run.load_model(), splits.test)
    assert recorded.threshold == pytest.approx(result.unlike_training_threshold(), rel=1e-5)
    flagged = energy_score(result.logits) > recorded.threshold
    assert 0 < float(flagged.float().mean()) <= 0.1  # about 5% of the dev set, by construction


def test_the_run_records_the_dev_share_either_rule_flags(trained):
    from bloodcells.evaluation.ood import flagged_share
    from bloodcells.inference.engines import TorchEngine

    run, splits = trained
    recorded = run.metrics.unlike_training
    measured = flagged_share(
        TorchEngine(run.load_model()), splits.test.images, recorded.threshold, recorded.pixel_range
    )
    assert recorded.dev_flagged == pytest.approx(measured, abs=1 / len(splits.test))
    assert 0 < recorded.dev_flagged <= 0.15  # 5% by the energy score, a few by the pixels


def test_noise_and_flat_images_score_as_unlike_training(trained):
    run = trained[0]
    model = run.load_model()
    threshold = run.metrics.unlike_training.threshold
    generator = torch.Generator().manual_seed(0)
    noise = torch.rand(8, 1, 32, 32, generator=generator)
    flat = torch.full((4, 1, 32, 32), 0.5)
    with torch.no_grad():
        odd = energy_score(model(standardize(torch.cat([noise, flat]))))
    assert float((odd > threshold).float().mean()) >= 0.75


def test_the_run_records_its_training_images_pixel_range(trained, tmp_path):
    from bloodcells.evaluation.ood import pixel_range
    from bloodcells.inference.predictor import Predictor

    run, splits = trained
    assert run.metrics.unlike_training.pixel_range == pixel_range(splits.train.images)
    moved = tmp_path / "run"
    shutil.copytree(run.path, moved)
    config = json.loads((moved / "config.json").read_text())
    (moved / "config.json").write_text(json.dumps(config | {"data_root": str(tmp_path / "gone")}))
    assert Predictor.from_path(moved).pixel_range == run.metrics.unlike_training.pixel_range
