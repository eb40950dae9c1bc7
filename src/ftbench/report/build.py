"""The resource_report stage as one function: load, compare, write every output atomically.

The stage script and the tests call the same :func:`build`, so what the tests check is what DVC runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ftbench.human import load_human
from ftbench.io import atomic_dir, write_bytes, write_json, write_text
from ftbench.params import Params
from ftbench.report.charts import build_charts
from ftbench.report.compare import ALPHA, compare, models_of, rows_of
from ftbench.report.frontier import verdict
from ftbench.report.html import render_html
from ftbench.report.runs import Runs, load_data_summary, load_runs
from ftbench.report.tables import (
    COST_CSV_COLUMNS,
    QUALITY_CSV_COLUMNS,
    comparison_csv_columns,
    csv_text,
    flat,
    fmt,
    render_markdown,
)

COMPARISON_JSON = Path("metrics/comparison.json")
COMPARISON_CSV = Path("metrics/comparison.csv")
COMPARISON_MD = Path("metrics/comparison.md")
#: The study's DVC metric (dvc.yaml ``metrics:``): the verdict in a few strings per model. comparison.json holds
#: every figure behind it but is a plain output: its hundreds of leaves would bury ``dvc exp show``.
VERDICT_JSON = Path("metrics/verdict.json")
PLOTS_DIR = Path("plots")
IMAGES_DIR = PLOTS_DIR / "images"  # a directory DVC renders as image plots (dvc.yaml: resource_report plots)
HTML_REPORT = Path("reports/index.html")


def trains_of(runs: Runs) -> dict[str, dict[str, list[dict]]]:
    """``{model: {method: [train.json of each seed]}}`` for the training-regime tables."""
    return {model: {m: [r.train or {} for r in rs] for m, rs in by_method.items() if m != "baseline"}
            for model, by_method in runs.items()}


def write_plots(comparison: dict, charts: dict[str, bytes]) -> None:
    """plots/quality.csv and plots/cost.csv (DVC bar charts), and plots/images/ replaced as a whole
    so that charts of models no longer in params go."""
    rows = rows_of(comparison)
    write_text(PLOTS_DIR / "quality.csv", csv_text(QUALITY_CSV_COLUMNS, rows))
    write_text(PLOTS_DIR / "cost.csv", csv_text(COST_CSV_COLUMNS, rows))
    with atomic_dir(IMAGES_DIR) as tmp:
        for name, data in charts.items():
            write_bytes(tmp / name, data)


def verdict_metrics(comparison: dict) -> dict[str, dict[str, str]]:
    """metrics/verdict.json: ``{model: verdict}`` (:func:`ftbench.report.frontier.verdict`)."""
    return {model: verdict(comparison[model], comparison["pairwise"][model], comparison["frontier"][model])
            for model in models_of(comparison)}


def build(params: Params) -> dict[str, Any]:
    """The whole resource_report stage, in the current directory: read every run that ``params.run``
    lists, compare, and write metrics/comparison.*, metrics/verdict.json, plots/ and reports/index.html.
    Returns the comparison."""
    runs = load_runs(params)
    data = load_data_summary()
    n_resamples = params.eval.bootstrap_resamples
    comparison = compare(runs, n_resamples=n_resamples, seed=params.seed)
    trains = trains_of(runs)
    human = load_human()  # metrics/human.json from the human_eval stage (None before it has run)
    charts = build_charts(runs, comparison)
    write_plots(comparison, charts)
    write_json(COMPARISON_JSON, comparison)
    write_json(VERDICT_JSON, verdict_metrics(comparison))
    write_text(COMPARISON_CSV, csv_text(comparison_csv_columns(), [flat(r) for r in rows_of(comparison)]))
    write_text(COMPARISON_MD, render_markdown(comparison, data, trains, n_resamples=n_resamples, human=human))
    write_text(HTML_REPORT, render_html(comparison, runs, data, trains, charts, n_resamples=n_resamples, human=human))
    return comparison


def summary_line(comparison: dict) -> str:
    """One line for the stage's log: each run's F1, its test against the baseline, and the fronts."""
    parts = []
    for row in rows_of(comparison):
        text = f"{row['run']} F1={fmt(row['f1'])}"
        test = (row.get("vs_baseline") or {}).get("f1")
        if test:
            text += f" ({'significant' if test['significant'] else 'n.s.'} vs baseline)"
        parts.append(text)
    fronts = [f"{m} front (time): {', '.join(comparison['frontier'][m]['train_seconds']['front']) or 'none'}"
              for m in models_of(comparison)]
    line = "; ".join(parts + fronts) + f" -> {COMPARISON_MD}, {HTML_REPORT}"
    family = comparison["family"]
    if family["min_p_adjusted"] >= ALPHA:
        line += (f"\nWARNING: {family['size']} tests and too few resamples: the smallest attainable adjusted p is "
                 f"{family['min_p_adjusted']:.2g}, so nothing can be significant (raise eval.bootstrap_resamples)")
    return line
