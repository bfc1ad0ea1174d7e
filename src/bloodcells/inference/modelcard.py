"""The model card (NAME.card.md) of an exported model, written from its metadata
(export.metadata) alone.

The card has no export time in it: exporting the same run again (to the other format, into
the same folder) writes the same card, so one card serves both files.
"""

from __future__ import annotations

from bloodcells.evaluation.ood import DEV_FLAGGED


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return [*lines, ""]


def _number(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def card_markdown(marker: str, meta: dict, name: str = "model") -> str:
    """The card's Markdown for `name`.onnx / `name`.pt; `marker` is its first line (how export
    recognises its own card)."""
    classes = meta["classes"]
    dev = meta.get("dev") or {}
    per_class = dev.get("per_class") or {}
    counts = meta.get("counts") or {}
    training = meta.get("training") or {}
    unlike = meta.get("unlike_training") or {}
    pixels = unlike.get("pixel_range")
    colour = "grayscale" if meta["channels"] == 1 else "RGB"
    lines = [
        marker,
        f"# Model card: {meta['model']} white-blood-cell classifier (run {meta['run']})",
        "",
        f"Made with bloodcells {meta['bloodcells']}. The exported model file next to this card "
        f"(`{name}.onnx` for onnxruntime, or `{name}.pt` for `torch.jit.load`) holds the weights, "
        "the classes, the transform and these facts as JSON metadata under the key "
        "`bloodcells`.",
        "",
        "## Intended use",
        "",
        "Research and teaching: learning how image classifiers of blood cells work and fail, "
        "and exploring unlabelled images in the lab. **This is not a diagnostic device.** It "
        "is not validated for clinical use; do not base any decision about a patient on it.",
        "",
        "## Data",
        "",
        f"Trained on `{meta.get('data') or 'unknown'}` ({len(classes)} classes, {colour} "
        f"{meta['size']}×{meta['size']} patches). Dev = the data's test split.",
        "",
    ]
    train_counts, dev_counts = counts.get("train") or {}, counts.get("dev") or {}
    rows = [
        [
            c,
            train_counts.get(c, "not recorded"),
            dev_counts.get(c, (per_class.get(c) or {}).get("support", "n/a")),
        ]
        for c in classes
    ]
    lines += _table(["class", "train images", "dev images"], rows)
    lines += [
        "## Dev-set results",
        "",
        f"Accuracy {_number(dev.get('accuracy'))}, balanced accuracy "
        f"{_number(dev.get('balanced_accuracy'))} on {dev.get('n', 'n/a')} dev images "
        f"(after epoch {dev.get('epoch', 'n/a')}).",
        "",
    ]
    rows = []
    for c in classes:
        scores = per_class.get(c) or {}
        rows.append([c, *(_number(scores.get(k)) for k in ("precision", "recall", "f1"))])
        rows[-1].append(scores.get("support", "n/a"))
    lines += _table(["class", "precision", "recall", "F1", "support"], rows)
    matrix = dev.get("confusion_matrix")
    if matrix:
        lines += ["Confusion matrix (rows: true class, columns: predicted):", ""]
        lines += _table(
            ["true \\ predicted", *classes], [[c, *matrix[i]] for i, c in enumerate(classes)]
        )
    options = ", ".join(f"{k}={v}" for k, v in (meta.get("options") or {}).items()) or "none"
    lines += [
        "## Training settings",
        "",
        f"- model: {meta['model']} (options: {options}), "
        f"{training.get('parameters', 'n/a')} parameters",
        f"- epochs {training.get('epochs')}, batch size {training.get('batch_size')}, "
        f"learning rate {training.get('learning_rate')}, seed {training.get('seed')}, "
        f"device {training.get('device')}",
        f"- trained {training.get('created')} with {_versions(training.get('versions'))}",
        "",
        "## Input and outputs",
        "",
        f"- input `images`: float32, N×{meta['channels']}×{meta['size']}×{meta['size']}, any "
        f"N, raw pixels in [0, 1] ({colour}; uint8 divided by 255), resized with PIL bilinear",
        f"- inside the graph: {meta.get('standardization')}",
        f"- outputs `logits` and `probabilities` (N×{len(classes)}), classes in the order "
        + ", ".join(classes),
        "",
        "## Unlike-training flag",
        "",
        "`bloodcells predict` flags an image `unlike-training` when its energy score, "
        f"-logsumexp(logits), is above {_number(unlike.get('threshold'), 4)} (the "
        f"{unlike.get('percentile', 'n/a')}th percentile of the dev set's scores, so 5% of dev "
        "images are flagged by construction), or when its brightness or contrast (mean and "
        "standard deviation of the raw pixels in [0, 1]) is outside "
        f"{_range(pixels, 'mean')} and {_range(pixels, 'std')}, the 0.5th to 99.5th "
        "percentiles of the training images'. Per-image standardization hides brightness and "
        "contrast from the network, which is why the second test is there."
        + _flagged(unlike.get(DEV_FLAGGED)),
        "",
        "## Known limits",
        "",
        "- Trained on one lab's images: one staining protocol, microscope and camera. On "
        "other sources accuracy is unknown and probably lower; check it on labelled images of "
        "your own first.",
        "- Dev metrics come from a split of the same source as the training images, so they "
        "are optimistic for any other source.",
        f"- A closed set of {len(classes)} classes: any other cell type, debris or artefact is "
        "still given one of them. The unlike-training flag catches some such images, not all.",
        "- Raw counts are biased towards the training mix when the sample's mix differs; the "
        "adjusted count of `bloodcells predict` corrects this only as far as the dev confusion "
        "matrix holds for the sample.",
        "",
    ]
    return "\n".join(lines)


def _flagged(share) -> str:
    if share is None:
        return ""
    return f" Together the two flag {100 * share:.1f}% of the dev images."


def _range(pixels: dict | None, name: str) -> str:
    if not pixels:
        return f"(no {name} range recorded: the data was not there at export)"
    low, high = pixels[name]
    return f"{name} {low:.3f} to {high:.3f}"


def _versions(versions) -> str:
    if not isinstance(versions, dict):
        return "unknown versions"
    return ", ".join(f"{k} {v}" for k, v in versions.items())
