"""Sweeps: the variant syntax, the plan, one ordinary run folder per run, resuming."""

from __future__ import annotations

import json
import socket

import pytest
from typer.testing import CliRunner

from bloodcells.analysis.evaluate import evaluate_run
from bloodcells.cli import app
from bloodcells.errors import BloodcellsError, ModelError, RunError
from bloodcells.experiments.compare import compare_paths
from bloodcells.experiments.plan import (
    MAX_RUNS,
    SWEEP_FILE,
    SweepPlan,
    load_sweep,
    open_sweep,
    plan_sweep,
)
from bloodcells.experiments.sweep import DataCache, plan_jobs, run_sweep, sweep_status
from bloodcells.experiments.variants import (
    LAB_VARIANTS,
    lr_text,
    parse_seeds,
    parse_variant,
    parse_variants,
    variant_name,
)
from bloodcells.runs import load_run
from bloodcells.training.stacked.fit import StackCallback
from bloodcells.utils.locks import LOCK_FILE
from tests.helpers import one_line_error
from tests.test_runs import held_by_another_process

runner = CliRunner()


@pytest.fixture
def tiny_root(tmp_path):
    from conftest import write_layout

    return write_layout(tmp_path / "tiny", per_class=(16, 6))


def test_lab_is_exercise_3_and_each_name_means_its_change():
    variants = parse_variants("lab")
    assert [v.name for v in variants] == list(LAB_VARIANTS)
    configs = {v.name: v.config() for v in variants}
    assert configs["base"].options == {} and configs["base"].learning_rate == 1e-4
    assert configs["bn2"].options == {"bn2": True}
    assert configs["dropout"].options == {"head_dropout": 0.3}
    assert configs["extra_fc"].options == {"extra_fc": 32}
    assert configs["lr=1e-3"].lr == 1e-3 and configs["lr=5e-5"].lr == 5e-5
    for name, config in configs.items():
        assert variant_name(config) == name  # the name compare gives a loose run back


def test_variants_combine_and_take_any_train_option():
    combined = parse_variant("bn2+dropout").config(seed=3, epochs=2)
    assert combined.options == {"bn2": True, "head_dropout": 0.3}
    assert (combined.seed, combined.epochs) == (3, 2)
    assert parse_variant("model=simple").config().model == "simple"
    assert parse_variant("batch_size=16").config().batch_size == 16
    assert parse_variant("head-dropout=0.5").config().options == {"head_dropout": 0.5}
    assert parse_variant("extra_fc=64+lr=2.5e-4").config().options == {"extra_fc": 64}
    assert parse_variant("bn2=false").config().options == {}
    assert [v.name for v in parse_variants("lab, bn2+dropout")][-1] == "bn2+dropout"
    assert lr_text(1e-3) == "1e-3" and lr_text(5e-5) == "5e-5" and lr_text(2.5e-4) == "2.5e-4"
    assert lr_text(0.01) == "0.01"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bn3", "unknown variant 'bn3'; use base, bn2, dropout, extra_fc, lab"),
        ("base,foo+bn2", "unknown variant 'foo'"),
        ("colour=red", "unknown option 'colour'"),
        ("lr=fast", "lr='fast' is not a number"),
        ("model=simple+bn2", "variant 'model=simple+bn2': model 'simple' has no option bn2"),
        ("model=resnet", "unknown model 'resnet'"),
        ("head_dropout=1.5", "head_dropout must be from 0 up to"),
        ("seed=4", "seed is set for the whole sweep (seeds)"),
        ("epochs=9", "epochs is set for the whole sweep (epochs)"),
        ("dropout+head_dropout=0.5", "sets head_dropout twice"),
        ("base,lr=1e-4", "variants 'base' and 'lr=1e-4' are the same config"),
        (" , ", "no variants given"),
    ],
)
def test_bad_variants_get_one_line(text, message):
    with pytest.raises(BloodcellsError) as info:
        for v in parse_variants(text):
            v.config()
    assert message in str(info.value) and "\n" not in str(info.value)


def test_seeds_are_a_count_a_list_or_a_range_and_bounded():
    assert parse_seeds(5) == [0, 1, 2, 3, 4]
    assert parse_seeds("0,3,7") == [0, 3, 7]
    assert parse_seeds("10-12") == [10, 11, 12]
    for bad, message in [
        ("0", "from 1 to 50"),
        ("51", "from 1 to 50"),
        ("1,1", "twice"),
        ("0-99", "at most 50 seeds"),
        ("five", "a count (5)"),
        ("3-1", "a count (5)"),
    ]:
        with pytest.raises(BloodcellsError, match=message.replace("(", r"\(").replace(")", r"\)")):
            parse_seeds(bad)


def test_the_plan_bounds_the_number_of_runs(tiny_root):
    many = ",".join(f"lr={i}e-6" for i in range(1, 21))
    with pytest.raises(BloodcellsError, match=f"at most {MAX_RUNS} in one sweep"):
        plan_sweep(tiny_root, many + ",base,bn2,dropout,extra_fc", 50)
    with pytest.raises(BloodcellsError, match=r"^epochs must be at least 1"):
        plan_sweep(tiny_root, "base", 2, epochs=0)
    with pytest.raises(BloodcellsError, match="no such dataset folder"):
        plan_sweep(tiny_root / "nope", "base", 2)


def test_jobs_stack_one_architecture_and_split_by_size(tiny_root, tmp_path):
    plan = plan_sweep(tiny_root, "base,lr=1e-3,bn2,model=simple", 3, epochs=1)
    status = sweep_status(tmp_path, plan)
    jobs = plan_jobs(status, 3)
    assert sorted(len(j.members) for j in jobs) == [3, 3, 6]  # base and lr=1e-3 together
    assert all(j.stacked for j in jobs)
    assert sorted(len(j.members) for j in plan_jobs(status, 3, limit=4)) == [3, 3, 3, 3]
    alone = plan_jobs(status, 3, stack=False)
    assert len(alone) == 12 and not any(j.stacked for j in alone)


class StopAt(StackCallback):
    """Ctrl-C in the middle of an epoch of the first stack that gets there."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.at = (epoch, batch)

    def on_batch_end(self, state) -> None:
        if (state.epoch, state.batch) == self.at:
            raise KeyboardInterrupt


def sweep(root, out, variants="base,lr=1e-3", seeds=2, epochs=2, **kwargs):
    plan = plan_sweep(root, variants, seeds, epochs)
    folder, _ = open_sweep(out, plan)
    return run_sweep(plan, folder, **kwargs), plan


def test_a_sweep_makes_ordinary_run_folders_and_a_comparison(tiny_root, tmp_path):
    outcome, _ = sweep(tiny_root, tmp_path / "runs")
    assert outcome.trained == 4 and outcome.skipped == 0 and not outcome.diverged
    info = json.loads((outcome.folder / SWEEP_FILE).read_text())
    assert info["format"] == 1 and info["seeds"] == [0, 1] and info["epochs"] == 2
    assert [v["name"] for v in info["variants"]] == ["base", "lr=1e-3"]
    assert info["classes"] == ["bar", "disc", "square"]
    assert [m["run"] for m in info["members"]] == [
        "base-seed0", "base-seed1", "lr=1e-3-seed0", "lr=1e-3-seed1",
    ]  # fmt: skip
    for path in outcome.runs:
        run = load_run(path)  # what evaluate, report and predict read
        assert run.metrics.status == "finished" and len(run.history) == 2
        assert run.info.sweep.trained == "stacked" and run.info.sweep.stack_size == 4
        assert {"weights.pt", "checkpoint.pt", "history.csv"} <= {p.name for p in path.iterdir()}
    evaluated = evaluate_run(load_run(outcome.runs[0]))
    assert evaluated["accuracy"] == pytest.approx(load_run(outcome.runs[0]).metrics.accuracy)
    result = compare_paths([outcome.folder])
    assert [g["name"] for g in result["groups"]] == ["base", "lr=1e-3"]
    assert json.loads((outcome.folder / "comparison.json").read_text()) == result
    again, _ = sweep(tiny_root, tmp_path / "runs")  # the same command: nothing left to do
    assert again.folder == outcome.folder and again.trained == 0 and again.skipped == 4
    from bloodcells.report.render import render
    from bloodcells.report.sources import load

    page = render(*load([outcome.folder]))  # bloodcells report SWEEP shows the answer
    assert 'id="variants"' in page and 'id="sweep-plot"' in page
    assert "Δ vs base (paired)" in page and "lr=1e-3" in page


def test_an_interrupted_sweep_continues_where_it_stopped(tiny_root, tmp_path):
    straight, _ = sweep(tiny_root, tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        sweep(tiny_root, tmp_path / "b", stack_callbacks=lambda *_: [StopAt(2, 3)])
    folder = next((tmp_path / "b").iterdir())
    kept = load_run(folder / "base-seed0")
    assert len(kept.history) == 1 and kept.metrics.status == "interrupted"
    resumed = run_sweep(load_sweep(folder).plan, folder)  # as `sweep --resume` does
    assert resumed.trained == 4
    for a, b in zip(straight.runs, resumed.runs, strict=True):
        # the same stack resumed from its checkpoints: the same arithmetic, the same numbers
        assert load_run(a).history.column("train_loss") == load_run(b).history.column("train_loss")
        assert load_run(b).metrics.status == "finished"


def test_no_stack_trains_each_run_with_fit(tiny_root, tmp_path):
    outcome, _ = sweep(tiny_root, tmp_path, variants="base", epochs=1, stack=False)
    run = load_run(outcome.runs[1])
    assert run.info.sweep.trained == "alone" and run.metrics.status == "finished"


def test_sweep_folders_that_cannot_be_used_say_so_in_one_line(tiny_root, tmp_path):
    plan = plan_sweep(tiny_root, "base", 2, epochs=1)
    (tmp_path / plan.folder_name()).write_text("not a folder")
    with pytest.raises(RunError, match="is a file, not a sweep folder"):
        open_sweep(tmp_path, plan)
    with pytest.raises(RunError, match="is a file, not a sweep folder"):
        load_sweep(tmp_path / plan.folder_name())
    with pytest.raises(RunError, match="not a sweep folder"):
        load_sweep(tmp_path)
    old = tmp_path / "old"
    old.mkdir()
    (old / SWEEP_FILE).write_text(json.dumps({"kind": "bloodcells sweep", "format": 0}))
    with pytest.raises(RunError, match=r"sweep format 0 .* older than this bloodcells"):
        load_sweep(old)
    (old / SWEEP_FILE).write_text(json.dumps({"kind": "bloodcells sweep", "format": 7}))
    with pytest.raises(RunError, match="newer than this bloodcells"):
        load_sweep(old)


def test_data_with_other_classes_is_refused(tiny_root, tmp_path):
    from conftest import write_layout

    other = write_layout(tmp_path / "other", classes=("a", "b"), per_class=(4, 2))
    with pytest.raises(RunError, match="differ from the sweep's"):
        DataCache(other, ["bar", "disc", "square"])(parse_variant("base").config())


def test_plans_round_trip_through_sweep_json(tiny_root):
    plan = plan_sweep(tiny_root, "base,bn2+dropout,lr=1e-3", "0,4", epochs=3)
    back = SweepPlan.from_dict(plan.to_dict(), tiny_root)
    assert back.fingerprint() == plan.fingerprint()
    assert [v.config(4, 3) for v in back.variants] == [v.config(4, 3) for v in plan.variants]


def test_sweep_command_refuses_before_making_anything(tiny_root, tmp_path):
    out = tmp_path / "runs"
    for args, message in [
        (["--variants", "bn3"], "unknown variant 'bn3'"),
        (["--variants", "model=simple+extra_fc"], "has no option extra_fc"),
        (["--seeds", "100"], "--seeds must be from 1 to 50"),
        (["--metric", "f1"], "unknown metric 'f1'"),
    ]:
        result = runner.invoke(app, ["sweep", "--data", str(tiny_root), "--out", str(out), *args])
        assert result.exit_code == 2 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()
    (tmp_path / "file").write_text("x")
    result = runner.invoke(app, ["sweep", "--resume", str(tmp_path / "file")])
    assert result.exit_code == 2 and "is a file, not a sweep folder" in result.output
    result = runner.invoke(app, ["sweep", "--resume", str(tmp_path), "--seeds", "3"])
    assert result.exit_code == 2 and "drop --seeds" in result.output


def test_sweep_command_trains_and_prints_the_answer(tiny_root, tmp_path):
    args = ["sweep", "--data", str(tiny_root), "--variants", "base,bn2", "--seeds", "2"]
    result = runner.invoke(app, [*args, "--epochs", "1", "--out", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    for text in ("2 variants × 2 seeds = 4 runs", "Δ vs base (paired)", "answer:", "bn2"):
        assert text in result.output
    assert (next((tmp_path / "runs").iterdir()) / "comparison.json").is_file()
    with pytest.raises(ModelError):
        parse_variant("")


def test_members_stopped_at_different_epochs_resume_in_their_own_stacks(
    tiny_root, tmp_path, monkeypatch
):
    from bloodcells.runs import RunWriter

    straight, _ = sweep(tiny_root, tmp_path / "a")
    original = RunWriter.on_epoch_end

    def stop_after_first_member(self, state):  # Ctrl-C while the stack saves its members
        original(self, state)
        if state.epoch == 1 and self.path.name == "base-seed0":
            raise KeyboardInterrupt

    monkeypatch.setattr(RunWriter, "on_epoch_end", stop_after_first_member)
    with pytest.raises(KeyboardInterrupt):
        sweep(tiny_root, tmp_path / "b")
    monkeypatch.setattr(RunWriter, "on_epoch_end", original)
    folder = next((tmp_path / "b").iterdir())
    plan = load_sweep(folder).plan
    jobs = plan_jobs(sweep_status(folder, plan), 3)
    assert sorted((j.epochs_done, len(j.members)) for j in jobs) == [(0, 3), (1, 1)]
    resumed = run_sweep(plan, folder)
    assert resumed.trained == 4
    for a, b in zip(straight.runs, resumed.runs, strict=True):
        # other stacks round differently (float32): close, not bit for bit
        assert load_run(b).history.column("train_loss") == pytest.approx(
            load_run(a).history.column("train_loss"), rel=1e-3
        )


@pytest.mark.parametrize("seeds", ["-1", "0,-1", "2,-3,4"])
def test_negative_seeds_are_named_not_the_variant(tiny_root, tmp_path, seeds):
    with pytest.raises(BloodcellsError) as error:
        plan_sweep(tiny_root, "base,bn2", seeds)
    message = str(error.value)
    assert "seeds must be from 0 to" in message and "not -" in message
    assert "variant" not in message
    out = tmp_path / "runs"
    result = runner.invoke(app, ["sweep", "--data", str(tiny_root), "--seeds", seeds, "--out", out])
    one_line_error(result, "seeds must be from 0 to")
    assert "variant" not in result.output and not out.exists()


def test_a_sweep_another_process_runs_is_refused_until_that_process_dies(tiny_root, tmp_path):
    plan = plan_sweep(tiny_root, "base", 2, epochs=1)
    folder, _ = open_sweep(tmp_path / "runs", plan)
    with held_by_another_process(folder) as holder:
        with pytest.raises(RunError) as error:
            run_sweep(plan, folder)
        assert str(error.value).startswith(
            f"{folder}: process {holder.pid} on host {socket.gethostname()} since "
        )
        assert "is writing this sweep right now" in str(error.value)
        args = ["sweep", "--data", tiny_root, "--variants", "base", "--seeds", "2"]
        result = runner.invoke(app, [*map(str, args), "--epochs", "1", "--out", tmp_path / "runs"])
        one_line_error(result, f"process {holder.pid} on host")  # nothing else printed
        assert not any((folder / name).exists() for *_, name in plan.members())
        holder.kill()
        holder.wait()
        assert run_sweep(plan, folder).trained == 2  # a dead holder does not block


def test_a_stack_member_another_process_writes_stops_the_sweep_before_training(tiny_root, tmp_path):
    fcntl = pytest.importorskip("fcntl")
    plan = plan_sweep(tiny_root, "base,lr=1e-3", 2, epochs=1)
    folder, _ = open_sweep(tmp_path, plan)
    member = folder / "lr=1e-3-seed1"
    member.mkdir()
    with open(member / LOCK_FILE, "w") as other:  # e.g. train --resume of that run
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(RunError, match=f"{member}: another process is writing this run"):
            run_sweep(plan, folder)
        assert not any((folder / name / "config.json").exists() for *_, name in plan.members())
        # the stack, locking its members itself (a folder it made after the sweep began)
        from bloodcells.experiments.sweep import DataCache, plan_jobs, run_job

        (job,) = plan_jobs(sweep_status(folder, plan), 3)
        assert job.stacked and len(job.members) == 4
        splits = DataCache(plan.data)(job.members[0][2])
        with pytest.raises(RunError, match=f"{member}: another process is writing this run"):
            run_job(job, splits, folder.name)
        assert not any((folder / name / "config.json").exists() for *_, name in plan.members())
    assert run_sweep(plan, folder).trained == 4
