"""`bloodcells report RUN...`: the page of runs trained separately, made from their folders."""

from __future__ import annotations

import re
import shutil

import pytest

from tests.conftest import write_layout
from tests.helpers import invoke, one_line_error

IMG = re.compile(r'<img src="data:image/png;base64,[^"]+" alt="([^"]+)"')


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """A simple and an advanced CNN, each trained by its own `bloodcells train`."""
    root = write_layout(tmp_path_factory.mktemp("data") / "easy", per_class=(20, 6))
    out = tmp_path_factory.mktemp("runs")
    for model in ("simple", "advanced"):
        result = invoke("train", "-d", root, "-m", model, "--epochs", "1", "--out", out)
        assert result.exit_code == 0, result.output
    runs = sorted(out.iterdir(), key=lambda p: not p.name.endswith("simple"))
    assert [p.name.rsplit("-", 1)[1] for p in runs] == ["simple", "advanced"]
    return runs


def test_report_of_two_runs_trained_separately(two_runs, tmp_path):
    target = tmp_path / "r.html"
    result = invoke("report", *two_runs, "-o", target)
    assert result.exit_code == 0, result.output
    assert f"wrote {target} (2 runs)" in result.output
    page = target.read_text(encoding="utf-8")
    assert 'http-equiv="refresh"' not in page
    for run in two_runs:
        assert f"<code>{run}</code>" in page  # the run folders, under Reproduce
    assert '<a href="#model-1">simple</a>' in page and '<a href="#model-2">advanced</a>' in page
    assert page.count('class="plotly-graph-div"') == 1 + 2 * 2
    assert page.count("<pre>") == 2  # each run's own command, under its folder's name
    assert all(f'<p class="muted">{run.name}</p><pre>' in page for run in two_runs)
    assert not IMG.search(page)  # no figure was asked for
    assert "Not made: run <code>bloodcells report " in page and "--explain</code>" in page


def test_explain_makes_the_missing_figures(two_runs, tmp_path):
    result = invoke("report", *two_runs, "--explain", "--device", "cpu", "-o", tmp_path)
    assert result.exit_code == 0, result.output
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    alts = IMG.findall(page)
    assert sorted(alts) == sorted(
        ["sample images", "prediction grid", "Grad-CAM grid", "top losses"]
    )
    assert "Not made" not in page
    assert "Grad-CAM of the advanced model" in page  # the advanced CNN is explained, as in the lab
    assert "No problems found while reading the images." in page  # the dataset summary


def test_one_run_folder_is_enough(two_runs, tmp_path):
    result = invoke("report", two_runs[0], "-o", tmp_path / "one.htm")
    assert result.exit_code == 0, result.output
    assert "(1 run)" in result.output
    assert 'id="model-1"' in (tmp_path / "one.htm").read_text() and "model-2" not in result.output


def test_a_folder_of_runs_is_read_as_its_runs(two_runs, tmp_path):
    result = invoke("report", two_runs[0].parent, "-o", tmp_path / "all.html")
    assert result.exit_code == 0, result.output
    assert "(2 runs)" in result.output


@pytest.mark.parametrize("make", ["missing", "empty folder", "file"])
def test_a_path_without_runs_is_one_line(tmp_path, make):
    path = tmp_path / "nothing here"
    if make == "empty folder":
        path.mkdir()
    elif make == "file":
        path.write_text("not a run")
    result = invoke("report", path, "-o", tmp_path / "r.html")
    one_line_error(result, str(path))
    assert not (tmp_path / "r.html").exists()


def test_output_and_device_are_checked_before_any_work(two_runs, tmp_path):
    one_line_error(invoke("report", *two_runs, "-o", tmp_path / "r.txt"), "unsupported file type")
    one_line_error(invoke("report", *two_runs, "--device", "tpu"), "unsupported device")
    assert list(tmp_path.iterdir()) == []


def test_help_names_the_inputs():
    result = invoke("report", "--help")
    assert result.exit_code == 0, result.output
    assert "--explain" in result.output and "lab" in result.output


def test_damaged_runs_among_others_are_left_out_aloud(two_runs, tmp_path):
    folder = tmp_path / "runs"
    for run in two_runs:
        shutil.copytree(run, folder / run.name)
    broken = folder / "<b>broken"  # a user's folder name: shown as text, never markup
    shutil.copytree(two_runs[0], broken)
    (broken / "metrics.json").write_text("{half")
    headless = folder / "no-config"
    shutil.copytree(two_runs[1], headless)
    (headless / "config.json").unlink()
    target = tmp_path / "r.html"
    result = invoke("report", folder, "-o", target)
    assert result.exit_code == 0, result.output
    assert f"wrote {target} (2 runs; 2 left out)" in result.stdout
    assert f"left out {broken}: metrics.json: unreadable" in result.stderr
    assert f"left out {headless}: no config.json; the run folder is damaged" in result.stderr
    page = target.read_text(encoding="utf-8")
    left_out = page.split('id="left-out"', 1)[1].split("</div>", 1)[0]
    assert "Left out: 2 run folders" in left_out
    assert "&lt;b&gt;broken</code>: metrics.json: unreadable" in left_out
    assert "<b>broken" not in page
    assert f"<code>{headless}</code>: no config.json" in left_out


def test_an_existing_page_is_replaced_only_with_overwrite(two_runs, tmp_path):
    target = tmp_path / "r.html"
    target.write_text("my notes")
    one_line_error(invoke("report", *two_runs, "-o", target), f"{target}: exists; pass --overwrite")
    (tmp_path / "report.html").write_text("mine too")  # -o FOLDER: its report.html
    one_line_error(invoke("report", *two_runs, "-o", tmp_path), "report.html: exists; pass")
    assert target.read_text() == "my notes" and (tmp_path / "report.html").read_text() == "mine too"
    result = invoke("report", *two_runs, "-o", target, "--overwrite")
    assert result.exit_code == 0, result.output
    assert "(2 runs)" in result.output and "<html" in target.read_text(encoding="utf-8")
