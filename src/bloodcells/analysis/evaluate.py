"""`bloodcells evaluate`: a run's model on the test split of its data, plain or adapted."""

from __future__ import annotations

from pathlib import Path

from bloodcells.analysis.adapt import evaluate_adapted, require_batchnorm
from bloodcells.runs import Run
from bloodcells.utils.devices import select_device


def evaluate_run(
    run: Run,
    data_root: str | Path | None = None,
    device: str | None = None,
    tta: bool = False,
    adapt_bn: bool = False,
) -> dict:
    """Metrics of a run's model on the test split of its data (or of `data_root`), with `tta`
    and `adapt_bn` if asked, and "tta" and "adapt_bn" saying how. The run is not changed.

    A BloodcellsError when `adapt_bn` is asked of a model without BatchNorm layers.
    """
    device_ = select_device(device)
    model = run.load_model(device_)
    if adapt_bn:
        require_batchnorm(model, run.config.model)
    splits = run.load_data(data_root)
    result = evaluate_adapted(model, splits.test, str(device_), tta, adapt_bn)
    return {
        "run": str(run.path),
        "data": str(splits.root),
        "tta": tta,
        "adapt_bn": adapt_bn,
        **result.metrics(),
    }
