"""Using a trained run never touches the caller's random numbers (no hidden global state)."""

from __future__ import annotations

import pytest
import torch

from bloodcells import Predictor, export_run, load_run


@pytest.fixture
def run(trained):
    return load_run(trained[0].path)


def leaves_the_rng_alone(action) -> None:
    torch.manual_seed(1234)
    before = torch.random.get_rng_state()
    expected = torch.rand(3)
    torch.random.set_rng_state(before)
    action()
    assert torch.equal(torch.random.get_rng_state(), before)
    assert torch.equal(torch.rand(3), expected)


def test_loading_a_run_and_its_model_leaves_the_rng_as_it_was(trained):
    leaves_the_rng_alone(lambda: load_run(trained[0].path).load_model())


def test_building_a_predictor_leaves_the_rng_as_it_was(run):
    leaves_the_rng_alone(lambda: Predictor.from_path(run.path))


def test_exporting_leaves_the_rng_as_it_was(run, tmp_path):
    leaves_the_rng_alone(lambda: export_run(run, "torchscript", tmp_path / "m.pt", check=False))


def test_rendering_a_report_leaves_the_rng_as_it_was(run, tmp_path):
    from bloodcells.report.render import write_report

    leaves_the_rng_alone(lambda: write_report([run.path], tmp_path / "page.html", explain=True))
