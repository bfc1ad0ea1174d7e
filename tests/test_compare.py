"""compare: the statistics on hand-made numbers with known answers, grouping, the table."""

from __future__ import annotations

import json
import math
from pathlib import Path

import plotly.graph_objects as go
import pytest
from typer.testing import CliRunner

from bloodcells.cli import app
from bloodcells.errors import BloodcellsError
from bloodcells.experiments.compare import Scored, compare_runs
from bloodcells.experiments.variants import variant_name
from bloodcells.runs import Run, RunInfo, RunMetrics, SweepMember
from bloodcells.stats.seeds import Summary, paired_difference, summarize, verdict
from bloodcells.training import History
from bloodcells.training.config import TrainConfig
from bloodcells.viz.compare import comparison_figure, reading, table_rows

# Student t quantiles from a printed table: t(0.975, df)
T975 = {2: 4.302653, 4: 2.776445}


def test_summary_is_the_mean_sd_and_t_interval_by_hand():
    s = summarize([1, 2, 3, 4, 5])
    sd = math.sqrt(2.5)  # sum of squares 10 over n-1 = 4
    half = T975[4] * sd / math.sqrt(5)  # 1.96324
    assert (s.n, s.mean) == (5, 3)
    assert s.sd == pytest.approx(sd, abs=1e-12)
    assert (s.low, s.high) == pytest.approx((3 - half, 3 + half), abs=1e-6)
    assert (s.low, s.high) == pytest.approx((1.036757, 4.963243), abs=1e-6)


def test_one_value_has_no_interval_and_equal_values_a_point():
    assert summarize([0.9]) == Summary(1, 0.9, None, None, None)
    assert summarize([0.5, 0.5, 0.5]) == Summary(3, 0.5, 0.0, 0.5, 0.5)
    with pytest.raises(ValueError):
        summarize([])


def test_paired_difference_over_common_seeds_by_hand():
    variant = {0: 0.80, 1: 0.82, 2: 0.85, 7: 0.99}  # seed 7 has no partner
    baseline = {0: 0.78, 1: 0.80, 2: 0.81, 3: 0.90}  # nor has seed 3
    p = paired_difference(variant, baseline)
    assert p.seeds == (0, 1, 2) and p.n == 3
    # differences 0.02, 0.02, 0.04: mean 0.02667, sd 0.011547, t = 4 with 2 df
    assert p.mean == pytest.approx(0.08 / 3)
    assert p.sd == pytest.approx(math.sqrt(4e-4 / 3))
    half = T975[2] * p.sd / math.sqrt(3)
    assert (p.low, p.high) == pytest.approx((p.mean - half, p.mean + half), abs=1e-6)
    # with 2 df the t distribution has a closed form: P(T > t) = 1/2 - t / (2 sqrt(2 + t^2))
    assert p.p == pytest.approx(2 * (0.5 - 4 / (2 * math.sqrt(18))), rel=1e-6)  # 0.05719


def test_paired_difference_without_enough_seeds_says_so():
    assert paired_difference({0: 0.8}, {1: 0.7}).n == 0
    one = paired_difference({0: 0.8}, {0: 0.7})
    assert one.n == 1 and one.mean == pytest.approx(0.1) and one.low is None and one.p is None
    same = paired_difference({0: 0.8, 1: 0.9, 2: 0.6}, {0: 0.7, 1: 0.8, 2: 0.5})  # all 0.1
    assert same.p is None and same.low == pytest.approx(0.1)
    two = paired_difference({0: 0.8, 1: 0.9}, {0: 0.7, 1: 0.8})
    assert two.n == 2 and two.mean == pytest.approx(0.1) and two.low is None and two.p is None


def test_verdict_needs_intervals_that_do_not_overlap():
    base = Summary(5, 0.90, 0.01, 0.88, 0.92)
    assert verdict(Summary(5, 0.95, 0.01, 0.93, 0.97), base) == "better"
    assert verdict(Summary(5, 0.85, 0.01, 0.83, 0.87), base) == "worse"
    assert verdict(Summary(5, 0.93, 0.01, 0.91, 0.95), base) == "no clear difference"
    assert verdict(Summary(5, 0.95, 0.01, 0.92, 0.97), base) == "no clear difference"  # touch
    assert verdict(Summary(1, 0.99, None, None, None), base) == "too few seeds"
    assert verdict(Summary(2, 0.99, 0.0, 0.99, 0.99), base) == "too few seeds"  # even a point
    assert verdict(base, Summary(2, 0.5, 0.01, 0.4, 0.6)) == "too few seeds"


def test_two_seeds_get_no_interval_and_no_verdict():
    # a partial sweep: two seeds that agree would give a zero-width interval
    runs = [
        *scores([0.90, 0.90], name="base"),
        *scores([0.95, 0.95], name="bn2", options={"bn2": True}),
        *scores([0.80, 0.81, 0.79], name="lr=5e-5", lr=5e-5),
    ]
    result = compare_runs(runs)
    by_name = {g["name"]: g for g in result["groups"]}
    assert by_name["base"]["ci"] is None and by_name["bn2"]["ci"] is None
    assert by_name["bn2"]["paired"]["ci"] is None and by_name["bn2"]["paired"]["p"] is None
    assert by_name["lr=5e-5"]["ci"] is not None  # three seeds: an interval of its own
    assert {g["verdict"] for g in result["groups"][1:]} == {"too few seeds"}
    rows = {r["variant"]: r for r in table_rows(result)}
    too_few = "too few seeds (n=2; 3 or more give an interval)"
    assert rows["base"]["95% CI"] == too_few and rows["bn2"]["95% CI"] == too_few
    assert rows["bn2"]["95% CI of Δ"] == too_few and rows["bn2"]["verdict"] == "too few seeds"
    assert rows["lr=5e-5"]["95% CI"].startswith("[")
    lines = reading(result)
    assert not any("better" in line or "worse" in line for line in lines)
    assert any(line.startswith("too few seeds") and "bn2 n=2" in line for line in lines)
    assert "below 3 seeds" in result["rule"]


def fake_run(seed=0, data="/data/a", classes=("x", "y"), accuracy=0.9, name=None, **config):
    """A finished run as load_run reads one, without files."""
    cfg = TrainConfig(seed=seed, epochs=2, **config)
    metrics = RunMetrics(status="finished", accuracy=accuracy, balanced_accuracy=accuracy)
    info = RunInfo(cfg, list(classes), data, sweep=SweepMember(variant=name) if name else None)
    path = Path(f"/runs/{name or 'r'}-{seed}")
    run = Run(path, info, metrics, History())
    return Scored(run, seed, accuracy, name or variant_name(cfg))


def scores(values, **kwargs):
    return [fake_run(seed=s, accuracy=v, **kwargs) for s, v in enumerate(values)]


def test_compare_runs_groups_by_config_and_pairs_by_seed():
    runs = [
        *scores([0.90, 0.91, 0.89, 0.90, 0.90], name="base"),
        *scores([0.95, 0.96, 0.94, 0.95, 0.95], name="bn2", options={"bn2": True}),
        *scores([0.91, 0.92, 0.90, 0.91, 0.90], name="lr=1e-3", lr=1e-3),
        *scores([0.80, 0.81, 0.79, 0.80, 0.80], name="lr=5e-5", lr=5e-5),
    ]
    result = compare_runs(runs)
    json.dumps(result)  # plain JSON
    assert result["baseline"] == "base" and result["metric"] == "accuracy"
    by_name = {g["name"]: g for g in result["groups"]}
    assert result["groups"][0]["name"] == "base"
    assert by_name["base"]["n"] == 5 and by_name["base"]["seeds"] == [0, 1, 2, 3, 4]
    assert by_name["base"]["mean"] == pytest.approx(0.90)
    assert by_name["bn2"]["verdict"] == "better"
    assert by_name["lr=5e-5"]["verdict"] == "worse"
    # +0.01 at every seed but one: the intervals overlap, the paired interval does not hold 0
    lr3 = by_name["lr=1e-3"]
    assert lr3["verdict"] == "no clear difference"
    assert lr3["paired"]["mean"] == pytest.approx(0.008) and lr3["paired"]["ci"][0] > 0
    assert lr3["paired"]["p"] < 0.05
    assert by_name["base"]["paired"] is None
    lines = reading(result)
    assert any(line.startswith("better than base") and "bn2" in line for line in lines)
    assert any("worse than base" in line and "lr=5e-5" in line for line in lines)
    assert any("paired Δ interval excludes 0" in line and "lr=1e-3" in line for line in lines)
    rows = {r["variant"]: r for r in table_rows(result)}
    assert rows["base"]["Δ vs base (paired)"] == "baseline"
    assert rows["bn2"]["verdict"] == "better"
    assert rows["bn2"]["Δ vs base (paired)"] == "+0.050 (n=5)"
    assert rows["bn2"]["p"] == "n/a"  # every paired difference is 0.05: no spread, no test


def test_the_metric_and_the_baseline_can_be_chosen():
    runs = [
        *scores([0.8, 0.9], name="base"),
        *scores([0.7, 0.75], name="bn2", options={"bn2": True}),
    ]
    result = compare_runs(runs, baseline="bn2")
    assert result["baseline"] == "bn2" and result["groups"][0]["name"] == "bn2"
    with pytest.raises(BloodcellsError, match=r"no group named 'nope'.*groups: base, bn2"):
        compare_runs(runs, baseline="nope")
    no_base = compare_runs(scores([0.8, 0.9], name="bn2", options={"bn2": True}))
    assert no_base["baseline"] is None and "--baseline" in no_base["notes"][0]


def test_runs_of_different_datasets_or_classes_are_refused():
    mixed = [*scores([0.8, 0.9]), *scores([0.8, 0.9], data="/data/b")]
    with pytest.raises(BloodcellsError, match=r"different datasets or classes.*/data/b"):
        compare_runs(mixed)
    other_classes = [*scores([0.8, 0.9]), *scores([0.8], classes=("x", "y", "z"))]
    with pytest.raises(BloodcellsError, match="one dataset at a time"):
        compare_runs(other_classes)


def test_loose_runs_are_named_by_their_config_and_a_seed_counts_once():
    runs = [
        fake_run(seed=0, accuracy=0.9),
        fake_run(seed=0, accuracy=0.8),  # the same config and seed again
        fake_run(seed=1, accuracy=0.85),
        fake_run(seed=0, accuracy=0.7, lr=1e-3, options={"head_dropout": 0.3}),
        fake_run(seed=0, accuracy=0.7, lr=1e-3, options={"head_dropout": 0.3}, batch_size=16),
    ]
    result = compare_runs(runs)
    names = [g["name"] for g in result["groups"]]
    assert names == ["base", "dropout+lr=1e-3", "dropout+lr=1e-3+batch_size=16"]
    assert result["groups"][0]["n"] == 2 and result["groups"][0]["values"] == [0.9, 0.85]
    assert any("a second run of base with seed 0" in note for note in result["notes"])


def test_comparison_figure_shows_each_seed_the_means_and_the_baseline_band():
    runs = [
        *scores([0.90, 0.91, 0.89], name="base"),
        *scores([0.95, 0.96], name="<b>x</b>", lr=1e-3),
    ]
    result = compare_runs(runs)
    fig = comparison_figure(result)
    assert isinstance(fig, go.Figure)
    dots, means = fig.data
    assert len(dots.x) == 5 and list(means.x) == pytest.approx([0.90, 0.955])
    assert "&lt;b&gt;" in means.y[1]  # user text shown literally, not as markup
    (band,) = fig.layout.shapes
    assert (band.x0, band.x1) == pytest.approx(tuple(result["groups"][0]["ci"]))
    json.loads(fig.to_json())


def test_compare_command_prints_the_table_and_json(tmp_path, monkeypatch):
    bn2 = {"bn2": True}
    runs = [
        *scores([0.9, 0.91, 0.89], name="base"),
        *scores([0.95, 0.96, 0.95], name="bn2", options=bn2),
    ]
    result = compare_runs(runs)
    monkeypatch.setattr("bloodcells.experiments.compare.compare_paths", lambda *a, **k: result)
    runner = CliRunner()
    table = runner.invoke(app, ["compare", str(tmp_path)])
    assert table.exit_code == 0, table.output
    for text in ("variant", "95% CI", "Δ vs base (paired)", "verdict", "bn2", "better"):
        assert text in table.output
    as_json = runner.invoke(app, ["compare", str(tmp_path), "--json"])
    assert json.loads(as_json.stdout)["groups"][1]["name"] == "bn2"


def test_compare_command_refuses_in_one_line(tmp_path):
    runner = CliRunner()
    missing = runner.invoke(app, ["compare", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "no such run or sweep folder" in missing.output
    (tmp_path / "file").write_text("x")
    a_file = runner.invoke(app, ["compare", str(tmp_path / "file")])
    assert a_file.exit_code == 2 and "is a file" in a_file.output
    empty = runner.invoke(app, ["compare", str(tmp_path)])
    assert empty.exit_code == 2 and "holds no run or sweep folders" in empty.output
    metric = runner.invoke(app, ["compare", str(tmp_path), "--metric", "f1"])
    assert metric.exit_code == 2 and "unknown metric 'f1'" in metric.output
    for result in (missing, a_file, empty, metric):
        assert len(result.output.strip().splitlines()) == 1


def test_a_run_saved_before_recipes_joins_its_group():
    new = fake_run(seed=0, accuracy=0.9)
    old = fake_run(seed=1, accuracy=0.8)
    old.run.info.config = TrainConfig.from_saved({"model": "advanced", "seed": 1, "lr": None})
    old.run.config.epochs = new.run.config.epochs
    result = compare_runs([new, old])
    assert [g["n"] for g in result["groups"]] == [2]
