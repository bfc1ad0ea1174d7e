"""`bloodcells evaluate`: a run's model on the test split of its data, plain or adapted."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

from bloodcells.analysis.adapt import evaluate_adapted, require_batchnorm
from bloodcells.cells.crop_set import crop_cell_set
from bloodcells.cells.crops import CropPolicy
from bloodcells.data import Splits
from bloodcells.errors import BloodcellsError
from bloodcells.runs import Run
from bloodcells.utils.devices import select_device


def evaluate_run(
    run: Run,
    data_root: str | Path | None = None,
    device: str | None = None,
    tta: bool = False,
    adapt_bn: bool = False,
    find_cells: bool = False,
) -> dict:
    """Metrics of a run's model on the test split of its data (or of `data_root`), with `tta`
    and `adapt_bn` if asked, and "tta" and "adapt_bn" saying how. The run is not changed.

    With `find_cells`, `data_root` holds whole fields in the lab layout: each field's white
    cell nearest its centre is cut as the run's training crops were (data crop-cells, at the
    fields' own scale) and evaluated. A BloodcellsError when `adapt_bn` is asked of a model
    without BatchNorm layers.
    """
    device_ = select_device(device)
    model = run.load_model(device_)
    if adapt_bn:
        require_batchnorm(model, run.config.model)
    splits = _cut_fields(run, data_root) if find_cells else run.load_data(data_root)
    result = evaluate_adapted(model, splits.test, str(device_), tta, adapt_bn)
    return {
        "run": str(run.path),
        "data": str(splits.root),
        "tta": tta,
        "adapt_bn": adapt_bn,
        **result.metrics(),
    }


def _cut_fields(run: Run, data_root: str | Path | None) -> Splits:
    """The run's dataset made from whole fields: one crop per field, cut as the run's were."""
    if data_root is None:
        raise BloodcellsError("find_cells needs data_root: a folder of whole fields")
    record = run.info.crops or {}
    policy = record.get("crop_policy")
    policy = CropPolicy.from_dict(policy) if policy else CropPolicy(size=run.config.image_size)
    with tempfile.TemporaryDirectory(prefix="bloodcells-crops-") as tmp:
        crops = Path(tmp) / "crops"
        crop_cell_set(data_root, crops, policy=policy, stain=record.get("stain", "auto"))
        splits = run.load_data(crops, cache=False)
    return replace(splits, root=Path(data_root).resolve())
