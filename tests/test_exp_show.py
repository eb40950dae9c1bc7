"""`dvc exp show` stays readable (issue 10): dvc.yaml declares as metrics only what a person compares across
experiments, and one documented filter hides the params and deps DVC always adds.

The fast test here counts the columns the default study (params.yaml as committed) will show, from the metric
files dvc.yaml declares and the keys the stages write into each. tests/test_pipeline.py checks the same
prediction against the real `dvc exp show --csv` of a repro (``expected_columns``, ``EXP_SHOW_FILTER``).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path, PurePosixPath

import yaml
from conftest import REPO

from ftbench.costs import COST_JSON, cost_metrics
from ftbench.evaluation import QUALITY_JSON, quality_metrics
from ftbench.report import frontier
from ftbench.report.build import VERDICT_JSON

#: The README's filter, one negative lookahead (DVC matches it with re.match): drop every column but DVC's own that
#: name a row (rev names the workspace and commits, Experiment the experiments; State and Executor, shown only
#: while a queue runs) and the metric columns, which all end with one of the nine per-run metrics (the verdict's
#: keys too: best_f1, front_train_seconds, front_peak_memory_mb). No --keep: a kept column would survive
#: --only-changed too.
DROP = ("(?!(Experiment|rev|Created|State|Executor"
        "|.*(f1|em|bleu|rougeL|bertscore|train_seconds|samples_per_s|peak_memory_mb|energy_wh))$)")
EXP_SHOW_FILTER = ["--drop", DROP]
MAX_COLUMNS = 40
#: What `dvc exp show --csv` always prints before the metrics; `State` and `Executor` only while a queue runs.
CSV_FIXED = ("Experiment", "rev", "typ", "Created", "parent")
KEPT_FIXED = ("Experiment", "rev", "Created")


def metric_keys(path: str, models: list[str]) -> list[str]:
    """The flattened keys the stages write into a declared metric file; an undeclared kind fails the test."""
    name = PurePosixPath(path).name
    if name == QUALITY_JSON:
        return list(quality_metrics({}))
    if name == COST_JSON:
        return list(cost_metrics({}))
    if path == str(VERDICT_JSON):
        keys = frontier.verdict({}, {}, {cost: {"front": []} for cost, _ in frontier.COSTS})
        return [f"{model}.{key}" for model in models for key in keys]
    raise AssertionError(f"dvc.yaml declares {path} as a metric: only {QUALITY_JSON}, {COST_JSON} (per run) and "
                         f"{VERDICT_JSON} should be, or `dvc exp show` grows a column per leaf; make it a plain out "
                         "(cache: false)")


def expected_columns(leaves: dict[str, list[str]]) -> list[str]:
    """Metric column names as `dvc exp show` makes them: the key alone when no other file has it, else path:key."""
    count = Counter(key for keys in leaves.values() for key in keys)
    return [key if count[key] == 1 else f"{path}:{key}" for path, keys in leaves.items() for key in keys]


def declared_metrics(root: Path = REPO) -> list[str]:
    """Every metric file dvc.yaml declares for the study in ``root``'s params.yaml (matrix resolved by DVC)."""
    from dvc.repo import Repo

    with Repo(str(root), config={"core": {"no_scm": True}}) as repo:  # reads dvc.yaml and params.yaml only
        paths = [str(o) for stage in repo.index.stages for o in stage.outs if o.metric]
    top_level = yaml.safe_load((root / "dvc.yaml").read_text()).get("metrics") or []
    return paths + [str(p) for p in top_level]


def test_default_study_fits_exp_show():
    """The default study (1 model, baseline + 3 methods, 1 seed) declares few enough metric leaves that, with
    all five of DVC's CSV columns, `dvc exp show --csv` under the README's --drop filter (params and deps
    removed; DVC always adds those, over a hundred) has at most 40 columns; and the run-level metrics are the
    ones the issue lists."""
    models = yaml.safe_load((REPO / "params.yaml").read_text())["run"]["models"]
    leaves = {path: metric_keys(path, models) for path in declared_metrics()}
    quality = [k for p, k in leaves.items() if p.endswith(QUALITY_JSON)]
    cost = [k for p, k in leaves.items() if p.endswith(COST_JSON)]
    assert quality and all(k == ["f1", "em", "bleu", "rougeL", "bertscore"] for k in quality)
    assert cost and all(k == ["train_seconds", "samples_per_s", "peak_memory_mb", "energy_wh"] for k in cost)
    columns = expected_columns(leaves)
    total = len(CSV_FIXED) + len(columns)
    print(f"default study: {len(leaves)} metric files, {len(columns)} metric columns, {total} CSV columns")
    assert total <= MAX_COLUMNS, f"{total} columns: {columns}"


def test_filter_keeps_every_metric_column_and_no_param_or_dep():
    """The documented --drop pattern, applied as DVC applies it (re.match), to the default study's metric
    columns, its params (every leaf of params.yaml) and its deps (every path a stage lists)."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    leaves = {path: metric_keys(path, params["run"]["models"]) for path in declared_metrics()}
    drop = re.compile(DROP)

    def flat(d: dict, prefix: str = "") -> list[str]:
        return [n for k, v in d.items() for n in (flat(v, f"{prefix}{k}.") if isinstance(v, dict) else [prefix + k])]

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].values()
    deps = {d if isinstance(d, str) else next(iter(d)) for s in stages for d in s.get("deps", [])}
    dropped = [c for c in (*expected_columns(leaves), *KEPT_FIXED, "State", "Executor") if drop.match(c)]
    assert not dropped, f"the filter drops {dropped}"
    leaked = [c for c in (*flat(params), *deps, "typ", "parent") if not drop.match(c)]
    assert not leaked, f"the filter keeps {leaked}"


def test_cost_metrics_peak_memory_is_the_reports():
    """cost.json's peak memory is the figure the report's front ranks: the GPU's allocated peak when the run had
    a GPU (not the larger RSS of the host process), else the peak RSS; unmeasured energy stays null."""
    from ftbench.report.compare import _peak_memory

    cpu = {"train_seconds": 12.5, "samples_per_s": 3.2, "peak_rss_mb": 3000.0, "gpu_peak_memory_allocated_mb": None,
           "energy_wh": None, "lr": 1e-3}
    gpu = {**cpu, "gpu_peak_memory_allocated_mb": 500.0, "energy_wh": 0.25}
    assert cost_metrics(cpu) == {"train_seconds": 12.5, "samples_per_s": 3.2, "peak_memory_mb": 3000.0,
                                 "energy_wh": None}
    assert cost_metrics(gpu)["peak_memory_mb"] == 500.0 and cost_metrics(gpu)["energy_wh"] == 0.25
    for report in (cpu, gpu):
        assert cost_metrics(report)["peak_memory_mb"] == _peak_memory(report)[0]
