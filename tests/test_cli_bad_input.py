"""The command line as a hostile user drives it: odd paths, huge counts, wrong options."""

from __future__ import annotations

import errno
import json
import subprocess
import sys

import pytest

from bloodcells.cli.base import one_line
from bloodcells.runs import start_training
from bloodcells.training import Callback, TrainConfig
from tests.conftest import write_layout
from tests.helpers import invoke, one_line_error


@pytest.fixture(scope="module")
def odd_root(tmp_path_factory):
    """The easy set under a folder name full of shell and markup characters."""
    return write_layout(tmp_path_factory.mktemp("odd") / "cells [final] ;$(x)", per_class=(20, 6))


@pytest.fixture(scope="module")
def one_epoch_run(odd_root, tmp_path_factory):
    from bloodcells.data import load_dataset

    out = tmp_path_factory.mktemp("runs") / "runs[a]"
    config = TrainConfig(model="simple", epochs=1)
    return start_training(load_dataset(odd_root, cache=False), config, out=out).path


def test_help_does_not_import_torch():
    code = (
        "import sys; from typer.testing import CliRunner; from bloodcells.cli import app; "
        "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output; "
        "print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_paths_print_as_typed_not_as_markup(odd_root):
    result = invoke("data", "info", odd_root)
    assert result.exit_code == 0, result.output
    assert "cells [final] ;$(x)" in result.output
    one_line_error(invoke("data", "info", odd_root.parent / "runs[/]x"), "runs[/]x: no such folder")


def test_control_characters_in_folder_names_never_reach_the_terminal(tmp_path):
    root = tmp_path / "esc\x1b[31mred"
    (root / "train" / "a").mkdir(parents=True)
    result = invoke("data", "info", root)
    one_line_error(result, "esc\\x1b[31mred")
    assert "\x1b" not in result.output


def test_models_shows_descriptions_and_flags_in_a_log():
    result = invoke("models")  # CliRunner is not a terminal, as a log file is not
    assert result.exit_code == 0, result.output
    (advanced,) = [line for line in result.output.splitlines() if "advanced" in line]
    for part in ("153,061", "--bn2, --head-dropout, --extra-fc", "2 conv blocks"):
        assert part in advanced
    assert "head_dropout" not in result.output


def test_training_rows_in_a_log_have_no_blank_lines(odd_root, tmp_path):
    args = ("train", "-d", odd_root, "-m", "simple", "--epochs", "2", "--out", tmp_path)
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    rows = [i for i, line in enumerate(lines) if line.strip().startswith(("1/2", "2/2"))]
    assert rows and rows[1] == rows[0] + 1, result.output


class StopAfter(Callback):
    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_epoch_end(self, state) -> None:
        if state.epoch == self.epochs:
            raise KeyboardInterrupt


def test_resume_without_epochs_goes_to_the_runs_own_target(odd_root, tmp_path):
    from bloodcells.data import load_dataset

    splits = load_dataset(odd_root, cache=False)
    with pytest.raises(KeyboardInterrupt):
        start_training(splits, TrainConfig(model="simple", epochs=3), tmp_path, [StopAfter(1)])
    (run,) = tmp_path.iterdir()
    result = invoke("train", "--resume", run)
    assert result.exit_code == 0, result.output
    assert json.loads((run / "metrics.json").read_text())["epoch"] == 3
    assert json.loads((run / "config.json").read_text())["config"]["epochs"] == 3
    one_line_error(invoke("train", "--resume", run), "already has 3 epochs")


@pytest.mark.parametrize(
    "option",
    [
        ["--model", "simple"],
        ["--lr", "0.1"],
        ["--batch-size", "4"],
        ["--seed", "1"],
        ["--size", "48"],
        ["--rgb"],
        ["--head-dropout", "0.3"],
    ],
)
def test_resume_refuses_options_it_would_ignore(one_epoch_run, option):
    one_line_error(invoke("train", "--resume", one_epoch_run, *option), option[0])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--head-dropout", "1.5"], "head_dropout"),
        (["--extra-fc", "-3"], "extra_fc"),
        (["--device", "mps"], "unsupported device 'mps'"),
        (["--device", "meta"], "unsupported device 'meta'"),
        (["--seed", str(2**70)], "seed"),
        (["--size", "100000"], "--size must be 4 to 512"),
        (["--size", "6"], "too small"),
        (["--epochs", "0"], "epochs"),
    ],
)
def test_rejected_training_leaves_no_run_folder(odd_root, tmp_path, options, message):
    out = tmp_path / "runs"
    one_line_error(invoke("train", "-d", odd_root, "--out", out, *options), message)
    assert not out.exists() or not any(out.iterdir())


def test_bad_out_folders_areone_line(odd_root, tmp_path):
    a_file = tmp_path / "a file"
    a_file.write_text("mine")
    base = ("train", "-d", odd_root, "-m", "simple", "--epochs", "1", "--out")
    one_line_error(invoke(*base, a_file), "exists and is not a folder")
    one_line_error(invoke(*base, a_file / "sub"), "is not a folder")
    assert a_file.read_text() == "mine"
    one_line_error(invoke("lab", "--out", a_file, "--epochs", "1"), "exists and is not a folder")


def test_figure_outputs_are_checked_before_the_work(one_epoch_run, odd_root, tmp_path):
    folder = tmp_path / "figures [1]"
    folder.mkdir()
    result = invoke("gradcam", one_epoch_run, "-n", "2", "-o", folder)
    assert result.exit_code == 0, result.output
    assert (folder / "cam.png").is_file() and f"wrote {folder / 'cam.png'}" in result.output
    one_line_error(invoke("gradcam", one_epoch_run, "-o", tmp_path / "out.txt"), ".txt")
    one_line_error(invoke("mistakes", one_epoch_run, "-o", tmp_path / "noext"), "(none)")
    assert not (tmp_path / "out.txt").exists() and not (tmp_path / "noext.png").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["gradcam", "RUN", "-n", "100000"],
        ["mistakes", "RUN", "-n", "0"],
        ["data", "preview", "ROOT", "--per-class", "1000"],
    ],
)
def test_figure_counts_are_bounded(one_epoch_run, odd_root, tmp_path, args):
    args = [{"RUN": one_epoch_run, "ROOT": odd_root}.get(a, a) for a in args]
    one_line_error(invoke(*args, "-o", tmp_path / "x.png"), "for one figure")


def test_preview_caps_per_class_at_the_images_there(odd_root, tmp_path):
    result = invoke("data", "preview", odd_root, "--per-class", "30", "-o", tmp_path / "g.png")
    assert result.exit_code == 0, result.output  # 30 asked, 20 a class there
    assert (tmp_path / "g.png").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["data", "synth", "DEST", "--per-class", "-1"], "per-class"),
        (["data", "synth", "DEST", "--size", "100000"], "size"),
        (["lab", "--epochs", "0"], "epochs must be at least 1"),
        (["shapes", "advanced", "--size", "8"], "too small"),
    ],
)
def test_bad_counts_and_sizes_areone_line(tmp_path, args, message):
    args = [tmp_path / "dest" if a == "DEST" else a for a in args]
    one_line_error(invoke(*args), message)
    assert not (tmp_path / "dest").exists()


def test_os_errors_read_asone_line():
    full = OSError(errno.ENOSPC, "No space left on device", "runs/x/weights.pt")
    assert one_line(full) == "runs/x/weights.pt: no space left on device"
    assert one_line(PermissionError(errno.EACCES, "Permission denied")) == "permission denied"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--frob"], "No such option: --frob; see "),
        (["train", "--frob"], "No such option: --frob"),
        (["data", "info"], "Missing argument 'root'; see "),
        (["train", "--epochs", "x"], "Invalid value for '--epochs'"),
        (["shapes", "advanced", "--size", "2"], "Invalid value for '--size'"),
        (["nosuch"], "No such command 'nosuch'"),
        (["data", "nosuch"], "No such command 'nosuch'"),
        (["train", "--x\x1b[31m"], "No such option: --x\\x1b[31m"),
    ],
)
def test_usage_errors_are_one_line_too(args, message):
    result = invoke(*args)
    one_line_error(result, message)
    assert result.stderr.startswith("error: ") and "╭" not in result.output
    assert result.stderr.rstrip().endswith(" --help")  # where to look, in the same line
    assert "\x1b" not in result.output


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["data"]])
def test_help_is_still_typers(args):
    result = invoke(*args)
    assert "Usage: " in result.output and "error" not in result.output


@pytest.mark.parametrize("regex", [r"zzz(\d+)", r"zzz\d+", "zzz(\\d)\x1b"])
def test_group_by_is_echoed_as_typed(tmp_path, regex):
    from PIL import Image

    for cls in ("a", "b"):
        (tmp_path / "src" / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (8, 8), 40 * i).save(tmp_path / "src" / cls / f"x{i}.png")
    result = invoke("data", "split", tmp_path / "src", tmp_path / "dst", "--group-by", regex)
    shown = regex.replace("\x1b", "\\x1b")  # control characters escaped, nothing else
    one_line_error(result, f"--group-by '{shown}' ")
    assert "\\\\" not in result.output
