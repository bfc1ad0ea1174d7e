"""`bloodcells data split`: flat class folders or a CSV of labels -> the lab layout."""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import os
import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from bloodcells.cli import app
from bloodcells.data import load_dataset
from bloodcells.data.prepare import split as split_module
from bloodcells.data.prepare.split import read_manifest, split_folder
from bloodcells.errors import DataError
from tests.conftest import SHARED_DATA, easy_image

runner = CliRunner()
COUNTS = {"bar": 12, "disc": 20, "square": 15}


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result, *parts: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    for part in parts:
        assert part in result.output, result.output


def write_flat(root: Path, counts: dict[str, int] = COUNTS, donors: int = 5, seed: int = 0) -> Path:
    """ROOT/<class>/d<k>_<i>.png: easy_image patches, donor k = i mod `donors`."""
    rng = np.random.default_rng(seed)
    for k, (cls, n) in enumerate(counts.items()):
        folder = root / cls
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            image = Image.fromarray(easy_image(k % 3, rng))
            image.save(folder / f"d{i % donors}_{cls}{i:03d}.png")
    return root


def tree_state(root: Path) -> dict[str, tuple]:
    """Every entry below `root`: its kind, bytes hash, size and modification time."""
    state = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        state[path.relative_to(root).as_posix()] = (st.st_mode, digest, st.st_size, st.st_mtime_ns)
    return state


def split_of(dest: Path) -> dict[str, str]:
    """source -> split, from the manifest."""
    return {row["source"]: row["split"] for row in read_manifest(dest)}


@pytest.fixture
def flat(tmp_path) -> Path:
    return write_flat(tmp_path / "flat [src] ;$(x)")


def test_split_is_stratified_and_reads_as_the_lab_layout(flat, tmp_path):
    dest = tmp_path / "out [a]"
    result = invoke("data", "split", flat, dest)
    assert result.exit_code == 0, result.output
    assert str(dest) in result.output
    splits = load_dataset(dest, cache=False)
    assert splits.classes == sorted(COUNTS)
    for cls, n in COUNTS.items():
        n_test = round(0.2 * n)
        assert splits.test.class_counts()[cls] == n_test
        assert splits.train.class_counts()[cls] == n - n_test
    rows = read_manifest(dest)
    assert list(rows[0]) == ["file", "class", "split", "group", "source"]
    assert len(rows) == sum(COUNTS.values())
    for row in rows:
        assert (dest / row["file"]).is_file()
        assert row["file"].startswith(f"{row['split']}/{row['class']}/")
        assert (flat / row["source"]).read_bytes() == (dest / row["file"]).read_bytes()
    settings = json.loads((dest / "split.json").read_text())
    assert settings["seed"] == 0 and settings["files"] == {"copy": sum(COUNTS.values())}


@pytest.mark.parametrize("fraction", [0.01, 0.5, 0.99])
def test_every_class_has_train_and_test_images_at_any_fraction(flat, tmp_path, fraction):
    result = split_folder(flat, tmp_path / "out", test_fraction=fraction)
    for cls, n in COUNTS.items():
        assert 1 <= result.counts["test"][cls] <= n - 1


def test_the_same_seed_gives_the_same_split_and_another_seed_another(flat, tmp_path):
    split_folder(flat, tmp_path / "a", seed=3)
    split_folder(flat, tmp_path / "b", seed=3)
    split_folder(flat, tmp_path / "c", seed=4)
    assert split_of(tmp_path / "a") == split_of(tmp_path / "b")
    assert split_of(tmp_path / "a") != split_of(tmp_path / "c")


def test_src_is_never_touched_by_copies_or_links(flat, tmp_path):
    before = tree_state(flat)
    split_folder(flat, tmp_path / "copies")
    split_folder(flat, tmp_path / "links", link=True)
    assert tree_state(flat) == before


def test_link_makes_hardlinks(flat, tmp_path):
    result = invoke("data", "split", flat, tmp_path / "out", "--link")
    assert result.exit_code == 0, result.output
    assert f"{sum(COUNTS.values())} hardlinked" in result.output
    for row in read_manifest(tmp_path / "out"):
        assert os.path.samefile(tmp_path / "out" / row["file"], flat / row["source"])
        assert not (tmp_path / "out" / row["file"]).is_symlink()


def test_link_falls_back_to_symlinks_across_file_systems(flat, tmp_path, monkeypatch):
    def cross_device(src, dst, **kwargs):
        raise OSError(errno.EXDEV, "Invalid cross-device link", str(src))

    monkeypatch.setattr(split_module.os, "link", cross_device)
    result = split_folder(flat, tmp_path / "out", link=True)
    assert result.files == {"symlink": sum(COUNTS.values())}
    for row in read_manifest(tmp_path / "out"):
        target = tmp_path / "out" / row["file"]
        assert target.is_symlink() and os.path.samefile(target, flat / row["source"])
    assert len(load_dataset(tmp_path / "out", cache=False).train) > 0


def test_groups_are_never_on_both_sides(flat, tmp_path):
    regex = r"^[^/]+/(d\d+)_"
    for seed in range(3):
        dest = tmp_path / f"out{seed}"
        result = invoke("data", "split", flat, dest, "--group-by", regex, "--seed", seed)
        assert result.exit_code == 0, result.output
        assert "none on both sides" in result.output
        rows = read_manifest(dest)
        sides = {s: {r["group"] for r in rows if r["split"] == s} for s in ("train", "test")}
        assert sides["train"] and sides["test"] and not sides["train"] & sides["test"]
        assert sides["train"] | sides["test"] == {f"d{k}" for k in range(5)}
        tested = Counter(r["class"] for r in rows if r["split"] == "test")
        assert set(tested) == set(COUNTS)


def test_grouped_split_with_many_groups_comes_near_the_fraction(tmp_path):
    src = write_flat(tmp_path / "src", {"a": 60, "b": 60, "c": 40}, donors=30)
    result = split_folder(src, tmp_path / "out", test_fraction=0.25, group_by=r"/(d\d+)_")
    assert abs(result.test_fraction - 0.25) < 0.06
    assert result.groups["train"] + result.groups["test"] == 30


def test_labels_csv_with_sub_folders_and_clashing_names(tmp_path):
    src = tmp_path / "src"
    rng = np.random.default_rng(0)
    rows = [("path", "label")]
    for slide in ("s1", "s2", "s3"):
        for k, cls in enumerate(("disc", "bar")):
            for i in range(4):
                path = src / slide / f"cell{k}{i}.png"  # the same names on every slide
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(easy_image(k * 2, rng)).save(path)
                rows.append((f"{slide}/{path.name}", cls))
    labels = tmp_path / "labels.csv"
    with open(labels, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    dest = tmp_path / "out"
    result = invoke("data", "split", src, dest, "--labels", labels, "--group-by", "^(s\\d)/")
    assert result.exit_code == 0, result.output
    manifest = read_manifest(dest)
    assert len(manifest) == 24
    assert len({r["file"].rsplit("/", 1)[1] for r in manifest}) == 24  # unique names
    assert "s1__cell00.png" in {Path(r["file"]).name for r in manifest}
    splits = load_dataset(dest, cache=False)
    assert sum(splits.train.class_counts().values()) + len(splits.test) == 24


def test_clashing_names_inside_a_class_folder_are_kept_apart(tmp_path):
    src = tmp_path / "src"
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        for slide in ("x", "y"):
            for i in range(3):
                path = src / cls / slide / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(easy_image(0, rng)).save(path)
    split_folder(src, tmp_path / "out")
    files = Counter(Path(r["file"]).name for r in read_manifest(tmp_path / "out"))
    assert files == Counter(f"{s}__{i}.png" for s in ("x", "y") for i in range(3) for _ in "ab")


def test_skipped_files_are_said_once(flat, tmp_path):
    (flat / "disc" / "notes.txt").write_text("x")
    (flat / "disc" / ".DS_Store").write_text("x")
    result = invoke("data", "split", flat, tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "notes.txt: skipped" in result.output
    assert ".DS_Store" not in result.output


def test_overwrite_replaces_an_earlier_split_only(flat, tmp_path):
    dest = tmp_path / "out"
    split_folder(flat, dest, seed=1)
    one_line_error(invoke("data", "split", flat, dest), "exists", "--overwrite")
    result = invoke("data", "split", flat, dest, "--overwrite", "--seed", "2")
    assert result.exit_code == 0, result.output
    assert json.loads((dest / "split.json").read_text())["seed"] == 2
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    mine = tmp_path / "mine"
    (mine / "keep").mkdir(parents=True)
    one_line_error(invoke("data", "split", flat, mine, "--overwrite"), "not made by")
    assert (mine / "keep").is_dir()


def test_an_interrupted_split_leaves_no_dest_and_no_temporary_folder(flat, tmp_path, monkeypatch):
    real, calls = shutil.copy2, []

    def copy_then_stop(src, dst, **kwargs):
        calls.append(src)
        if len(calls) == 10:
            raise KeyboardInterrupt
        return real(src, dst, **kwargs)

    monkeypatch.setattr(split_module.shutil, "copy2", copy_then_stop)
    result = invoke("data", "split", flat, tmp_path / "out")
    assert result.exit_code == 130, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == [flat.name]


def test_an_unreadable_file_is_one_line_and_leaves_nothing(flat, tmp_path, monkeypatch):
    real = shutil.copy2
    bad = flat / "disc" / "d1_disc001.png"

    def copy(src, dst, **kwargs):
        if Path(src) == bad:
            raise PermissionError(errno.EACCES, "Permission denied", str(src))
        return real(src, dst, **kwargs)

    monkeypatch.setattr(split_module.shutil, "copy2", copy)
    one_line_error(invoke("data", "split", flat, tmp_path / "out"), str(bad), "permission denied")
    assert sorted(p.name for p in tmp_path.iterdir()) == [flat.name]


def test_an_earlier_split_survives_a_failed_overwrite(flat, tmp_path, monkeypatch):
    dest = tmp_path / "out"
    split_folder(flat, dest, seed=1)
    before = tree_state(dest)

    def broken(src, dst, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(dst))

    monkeypatch.setattr(split_module.shutil, "copy2", broken)
    one_line_error(invoke("data", "split", flat, dest, "--overwrite"), "no space left")
    assert tree_state(dest) == before


def test_a_full_disk_names_dest_not_the_source(flat, tmp_path, monkeypatch):
    real, dest = shutil.copy2, tmp_path / "out"

    def fill_up(src, dst, **kwargs):
        if len(list(Path(dst).parent.parent.parent.rglob("*.png"))) < 5:
            return real(src, dst, **kwargs)
        # as shutil's copy says it: the source file first, the destination second
        raise OSError(errno.ENOSPC, "No space left on device", str(src), None, str(dst))

    monkeypatch.setattr(split_module.shutil, "copy2", fill_up)
    result = invoke("data", "split", flat, dest)
    one_line_error(result, f"{dest}: cannot be written, no space left on device", "disk is full")
    assert str(flat) not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == [flat.name]


# ---- bad input: one line each, naming the file and what to do ---------------------------------


def test_a_lab_layout_src_says_it_is_already_split(easy_root, tmp_path):
    one_line_error(invoke("data", "split", easy_root, tmp_path / "out"), "already split")


def test_src_shapes_that_are_not_accepted(tmp_path):
    dest = tmp_path / "out"
    one_line_error(invoke("data", "split", tmp_path / "nope", dest), "no such folder", "--labels")
    loose = tmp_path / "loose"
    loose.mkdir()
    Image.new("L", (8, 8)).save(loose / "a.png")
    one_line_error(invoke("data", "split", loose, dest), "no class folders", "SRC/<class>/")
    table = tmp_path / "labels.csv"
    table.write_text("path,label\n")
    one_line_error(invoke("data", "split", table, dest), "is a CSV file", "--labels")
    (tmp_path / "empty" / "a").mkdir(parents=True)
    one_line_error(invoke("data", "split", tmp_path / "empty", dest), "no images")
    assert not dest.exists()


def test_a_class_with_one_image_or_a_single_class(tmp_path):
    src = write_flat(tmp_path / "src", {"a": 5, "b": 1})
    one_line_error(invoke("data", "split", src, tmp_path / "out"), "b", "at least 2")
    single = write_flat(tmp_path / "single", {"a": 5})
    one_line_error(invoke("data", "split", single, tmp_path / "out"), "at least two classes")


@pytest.mark.parametrize("fraction", ["0", "1", "-0.2", "1.5", "nan"])
def test_test_fraction_outside_0_1(flat, tmp_path, fraction):
    result = invoke("data", "split", flat, tmp_path / "out", "--test-fraction", fraction)
    one_line_error(result, "--test-fraction", "between 0 and 1")
    assert not (tmp_path / "out").exists()


def test_negative_seed(flat, tmp_path):
    one_line_error(invoke("data", "split", flat, tmp_path / "out", "--seed", "-1"), "--seed")


def test_csv_paths_that_do_not_exist_name_the_first_and_the_count(flat, tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\ndisc/d0_disc000.png,disc\nno/such.png,x\nnone.png,x\n")
    result = invoke("data", "split", flat, tmp_path / "out", "--labels", labels)
    one_line_error(result, "2 of 3 paths do not exist", "no/such.png", "row 3", "from SRC")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("path,label\na.png,x\n", "1 of 1 paths do not exist"),
        ("", "empty"),
        ("path,label\ndisc/d0_disc000.png\n", "1 column"),
        ("path,label\ndisc/d0_disc000.png,../up\n", "cannot be a class folder name"),
        ("path,label\ndisc/d0_disc000.png,a\ndisc/d0_disc000.png,b\n", "again"),
        ("path,label\ndisc/notes.txt,a\n", "not image files"),
    ],
)
def test_bad_label_csvs(flat, tmp_path, content, message):
    labels = tmp_path / "labels.csv"
    labels.write_text(content)
    one_line_error(invoke("data", "split", flat, tmp_path / "out", "--labels", labels), message)


def test_labels_that_do_not_exist_or_are_not_text(flat, tmp_path):
    result = invoke("data", "split", flat, tmp_path / "out", "--labels", tmp_path / "no.csv")
    one_line_error(result, "no.csv: no such file")
    binary = tmp_path / "bin.csv"
    binary.write_bytes(b"\xff\xfe\x00bad")
    one_line_error(invoke("data", "split", flat, tmp_path / "out", "--labels", binary), "UTF-8")


@pytest.mark.parametrize(
    ("regex", "message"),
    [
        ("(unclosed", "not a valid regular expression"),
        ("d[0-9]", "has no group"),
        ("(zzz)", "matches none of the 47 paths"),
        (r"/(d[0-3])_", "finds no group in 9 of 47 paths, e.g."),
    ],
)
def test_bad_group_regexes(flat, tmp_path, regex, message):
    result = invoke("data", "split", flat, tmp_path / "out", "--group-by", regex)
    one_line_error(result, "--group-by", message)
    assert not (tmp_path / "out").exists()


def test_one_group_is_not_a_split(flat, tmp_path):
    result = invoke("data", "split", flat, tmp_path / "out", "--group-by", r"(d)\d_")
    one_line_error(result, "one group", "at least two groups")


def test_a_grouping_that_leaves_a_class_without_test_images(tmp_path):
    src = write_flat(tmp_path / "src", {"a": 10, "b": 10, "c": 10}, donors=5)
    for path in (src / "c").iterdir():  # every image of class c comes from one donor
        path.rename(path.with_name("d9_" + path.name.split("_", 1)[1]))
    result = invoke("data", "split", src, tmp_path / "out", "--group-by", r"/(d\d)_")
    one_line_error(result, "grouping leaves class", "with no", "--seed")
    assert not (tmp_path / "out").exists()


def test_dest_that_exists_inside_or_around_src(flat, tmp_path):
    one_line_error(invoke("data", "split", flat, flat / "out"), "inside SRC")
    one_line_error(invoke("data", "split", flat, flat), "inside SRC")
    one_line_error(invoke("data", "split", flat, flat.parent, "--overwrite"), "holds SRC")
    (tmp_path / "file").write_text("x")
    one_line_error(invoke("data", "split", flat, tmp_path / "file"), "not a folder")


def test_split_errors_are_data_errors_from_python(flat, tmp_path):
    with pytest.raises(DataError, match="between 0 and 1"):
        split_folder(flat, tmp_path / "out", test_fraction=1.0)


def test_python_errors_name_parameters_and_the_command_its_flags(flat, tmp_path):
    """The library names split_folder's parameters; `data split` names its own flags."""
    out = tmp_path / "out"
    for kwargs, flags, python, cli in (
        ({"seed": -1}, ["--seed", "-1"], "seed=-1: must be", "--seed -1: must be"),
        (
            {"test_fraction": 1.5},
            ["--test-fraction", "1.5"],
            "test_fraction=1.5: must be",
            "--test-fraction 1.5: must be",
        ),
        ({"group_by": "d[0-9]"}, ["--group-by", "d[0-9]"], "group_by 'd[", "--group-by 'd["),
    ):
        with pytest.raises(DataError, match=re.escape(python)):
            split_folder(flat, out, **kwargs)
        one_line_error(invoke("data", "split", flat, out, *flags), cli)
    out.mkdir()
    (out / "x").write_text("x")
    with pytest.raises(DataError, match="add overwrite=True to replace it"):
        split_folder(flat, out)
    one_line_error(invoke("data", "split", flat, out), "add --overwrite to replace it")


@pytest.mark.realdata
def test_pbc_wbc_splits_into_a_set_load_dataset_reads(tmp_path):
    src = SHARED_DATA / "pbc-wbc" / "all"
    if not src.is_dir():
        pytest.skip("../shared/data/pbc-wbc is not here (real data lives outside the project)")
    result = split_folder(src, tmp_path / "pbc", link=True)
    assert result.counts["test"] == dict.fromkeys(sorted(p.name for p in src.iterdir()), 200)
    splits = load_dataset(tmp_path / "pbc")
    assert len(splits.train) == 3200 and len(splits.test) == 800 and not splits.problems
