"""Classification metrics on top of scikit-learn: accuracy, balanced accuracy, per class, matrix."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
)


def classification_metrics(y_true, y_pred, class_names: list[str]) -> dict:
    """Everything `bloodcells evaluate` reports, as plain JSON-able values."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    labels = list(range(len(class_names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    counts = np.bincount(y_true, minlength=len(class_names))
    present = counts > 0
    return {
        "n": len(y_true),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": _balanced_accuracy(y_true, y_pred),
        # what always answering the largest class scores, and uniform guessing over classes
        "majority_baseline": float(counts.max() / max(len(y_true), 1)),
        "chance": 1.0 / max(int(present.sum()), 1),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(class_names)
        },
        "classes": list(class_names),
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def row_percentages(matrix) -> np.ndarray:
    """A confusion matrix as the share of each true class (rows sum to 1; empty rows stay 0)."""
    matrix = np.asarray(matrix, dtype=float)
    return matrix / matrix.sum(axis=1, keepdims=True).clip(min=1)


def most_confused(matrix, class_names: list[str], top: int = 5) -> list[tuple[str, str, int]]:
    """The off-diagonal (true, predicted, count) pairs with the most mistakes, largest first."""
    matrix = np.asarray(matrix)
    pairs = [
        (class_names[i], class_names[j], int(matrix[i, j]))
        for i in range(len(matrix))
        for j in range(len(matrix))
        if i != j and matrix[i, j] > 0
    ]
    return sorted(pairs, key=lambda p: -p[2])[:top]


def _balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    if len(y_true) == 0:
        return 0.0
    return float(balanced_accuracy_score(y_true, y_pred))
