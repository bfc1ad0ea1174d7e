"""Compare runs: group them by config minus the seed, and say with intervals what differs.

For each group (a variant): n seeds, the mean, the standard deviation and a 95% Student t
interval over the seeds, mean ± t(0.975, n−1)·sd/√n. For each variant against the baseline
(the group named `base`, or another): the paired difference over the seeds both ran, with
its own t interval, and the p-value of the paired t-test (scipy.stats.ttest_rel).

The verdict follows the issue's rule: "better" (or "worse") only when the variant's interval
does not overlap the baseline's. That rule is conservative: two 95% intervals can overlap
while the difference is clear. Runs with the same seed share their shuffle order (and, with
the same architecture, their initialisation), so the paired interval removes part of the
seed-to-seed spread and is the sharper test; it is shown next to the verdict.

The statistics are small pure functions in bloodcells.stats.seeds (summarize,
paired_difference, verdict); compare_runs builds a JSON-able result from them, and
bloodcells.viz.compare presents it (table_rows, reading, comparison_figure).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bloodcells.errors import BloodcellsError, RunError
from bloodcells.experiments.plan import COMPARISON_FILE, is_sweep, iter_runs
from bloodcells.experiments.variants import variant_name
from bloodcells.runs import Run, load_run
from bloodcells.stats.seeds import (
    CONFIDENCE,
    INTERVAL,
    RULE,
    TEST,
    Summary,
    paired_difference,
    summarize,
    verdict,
)
from bloodcells.utils.files import write_atomic

METRICS = ("accuracy", "balanced_accuracy")
RESULT_FORMAT = 1
IGNORED = ("seed", "device")  # config fields that do not make another variant


@dataclass
class Scored:
    """A finished run and its score."""

    run: Run
    seed: int
    value: float
    name: str  # the variant's name


def score_runs(
    paths: Iterable[str | Path], metric: str = "accuracy"
) -> tuple[list[Scored], list[dict]]:
    """The finished runs under `paths` with their `metric`; and those left out, and why."""
    if metric not in METRICS:
        raise BloodcellsError(f"unknown metric {metric!r}; use {' or '.join(METRICS)}")
    scored, left_out = [], []
    for path in iter_runs(paths):
        try:
            run = load_run(path)
        except RunError as exc:
            reason = "not trained yet" if not path.exists() else str(exc).split(": ", 1)[-1]
            left_out.append({"run": str(path), "reason": reason})
            continue
        status = run.metrics.status or "unknown"
        value = getattr(run.metrics, metric)
        if status != "finished":
            left_out.append({"run": str(run.path), "reason": status})
        elif not isinstance(value, int | float) or not math.isfinite(value):
            left_out.append({"run": str(run.path), "reason": f"no {metric} in metrics.json"})
        else:
            sweep = run.info.sweep
            name = (sweep.variant if sweep else None) or variant_name(run.config)
            scored.append(Scored(run, run.config.seed, float(value), str(name)))
    return scored, left_out


def _group_key(run: Run) -> str:
    config = {k: v for k, v in run.config.to_dict().items() if k not in IGNORED}
    config["options"] = {k: v for k, v in sorted(config["options"].items()) if v}
    config["lr"] = run.config.learning_rate  # older runs saved None for the model's default
    return json.dumps(config, sort_keys=True)


def compare_runs(
    scored: Sequence[Scored],
    metric: str = "accuracy",
    baseline: str | None = None,
    left_out: Sequence[dict] = (),
    confidence: float = CONFIDENCE,
) -> dict:
    """The comparison of scored runs as plain JSON-able data (see the module docstring).

    Runs of different datasets or class sets are refused: their accuracies do not compare.
    """
    if not scored:
        raise BloodcellsError(
            "no finished runs to compare"
            + (f" ({len(left_out)} left out: not finished)" if left_out else "")
        )
    datasets: dict[tuple, int] = {}
    for s in scored:
        key = (s.run.data_root, tuple(s.run.classes))
        datasets[key] = datasets.get(key, 0) + 1
    if len(datasets) > 1:
        described = "; ".join(
            f"{root or 'unknown data'} with classes {', '.join(classes)} ({n} runs)"
            for (root, classes), n in datasets.items()
        )
        raise BloodcellsError(
            f"these runs used different datasets or classes: {described}; "
            "compare runs of one dataset at a time"
        )
    groups: dict[str, list[Scored]] = {}
    for s in scored:
        groups.setdefault(_group_key(s.run), []).append(s)
    notes = []
    named = _names(groups)
    rows = []
    for key, members in groups.items():
        by_seed: dict[int, Scored] = {}
        for s in members:
            if s.seed in by_seed:
                notes.append(f"{s.run.path}: a second run of {named[key]} with seed {s.seed}")
                continue
            by_seed[s.seed] = s
        seeds = sorted(by_seed)
        values = [by_seed[seed].value for seed in seeds]
        summary = summarize(values, confidence)
        rows.append(
            {
                "name": named[key],
                "config": json.loads(key),
                "n": summary.n,
                "seeds": seeds,
                "values": values,
                "runs": [str(by_seed[seed].run.path) for seed in seeds],
                "mean": summary.mean,
                "sd": summary.sd,
                "ci": None if summary.low is None else [summary.low, summary.high],
                "paired": None,
                "verdict": None,
            }
        )
    base = _baseline(rows, baseline)
    if base is None:
        notes.append("no group named base: name the baseline with --baseline to compare")
    else:
        rows.sort(key=lambda r: r is not base)  # the baseline first, the rest as found
        base_summary = _summary_of(base)
        base_values = dict(zip(base["seeds"], base["values"], strict=True))
        for row in rows:
            if row is base:
                continue
            paired = paired_difference(
                dict(zip(row["seeds"], row["values"], strict=True)), base_values, confidence
            )
            row["paired"] = {
                "n": paired.n,
                "seeds": list(paired.seeds),
                "mean": paired.mean,
                "sd": paired.sd,
                "ci": None if paired.low is None else [paired.low, paired.high],
                "p": paired.p,
            }
            row["verdict"] = verdict(_summary_of(row), base_summary)
    root, classes = next(iter(datasets))
    return {
        "format": RESULT_FORMAT,
        "metric": metric,
        "confidence": confidence,
        "interval": INTERVAL,
        "test": TEST,
        "rule": RULE,
        "data": root,
        "classes": list(classes),
        "baseline": None if base is None else base["name"],
        "groups": rows,
        "left_out": list(left_out),
        "notes": notes,
    }


def _summary_of(row: dict) -> Summary:
    low, high = row["ci"] if row["ci"] else (None, None)
    return Summary(row["n"], row["mean"], row["sd"], low, high)


def _names(groups: Mapping[str, list[Scored]]) -> dict[str, str]:
    """One name per group: the variant's name, plus what else differs where names repeat."""
    names = {key: members[0].name for key, members in groups.items()}
    counts: dict[str, int] = {}
    for name in names.values():
        counts[name] = counts.get(name, 0) + 1
    configs = {key: json.loads(key) for key in groups}
    for key, name in names.items():
        if counts[name] > 1:
            same = [configs[k] for k, n in names.items() if n == name]
            differ = sorted(f for f in configs[key] if len({json.dumps(c[f]) for c in same}) > 1)
            extra = ", ".join(f"{f}={configs[key][f]}" for f in differ if f != "options")
            names[key] = f"{name} ({extra})" if extra else name
    return names


def _baseline(rows: list[dict], name: str | None) -> dict | None:
    if name is None:
        return next((r for r in rows if r["name"] == "base"), None)
    for row in rows:
        if row["name"] == name:
            return row
    raise BloodcellsError(
        f"no group named {name!r} to use as baseline; groups: {', '.join(r['name'] for r in rows)}"
    )


def compare_paths(
    paths: Sequence[str | Path],
    metric: str = "accuracy",
    baseline: str | None = None,
    save: bool = True,
) -> dict:
    """Compare the runs under `paths`; a single sweep folder also gets comparison.json."""
    scored, left_out = score_runs(paths, metric)
    result = compare_runs(scored, metric, baseline, left_out)
    if save and len(paths) == 1 and is_sweep(paths[0]):
        save_comparison(Path(paths[0]), result)
    return result


def save_comparison(folder: Path, result: dict) -> Path:
    """Write `result` as the sweep folder's comparison.json (atomically)."""
    file = folder / COMPARISON_FILE
    write_atomic(file, json.dumps(result, indent=2))
    return file


def load_comparison(folder: str | Path) -> dict | None:
    """A sweep folder's comparison.json, or None when it has none (or an unreadable one)."""
    file = Path(folder) / COMPARISON_FILE
    try:
        result = json.loads(file.read_text())
    except (OSError, ValueError):
        return None
    return result if isinstance(result, dict) and result.get("format") == RESULT_FORMAT else None
