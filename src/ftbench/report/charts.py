"""Charts as PNG bytes: the quality-vs-cost front, the paired comparisons, quality, cost and time series.

Drawn on ``matplotlib.figure.Figure`` (Agg, no pyplot state) and saved without the "Software" PNG text
chunk, so reruns on the same inputs give the same bytes and DVC sees no change.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np

from ftbench.metrics import DISPLAY_NAMES
from ftbench.report.compare import MEMORY_KINDS, TABLE_QUALITY, comparisons
from ftbench.report.frontier import COSTS
from ftbench.report.runs import Run, Runs

_BASELINE_COLOUR = "#7f7f7f"
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def _colour(method: str, methods: Sequence[str]) -> str:
    if method == "baseline":
        return _BASELINE_COLOUR
    tuned = [m for m in methods if m != "baseline"]
    return _PALETTE[tuned.index(method) % len(_PALETTE)]


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _figure(ncols: int, nrows: int = 1, size: tuple[float, float] = (10.0, 4.5)):
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, list(axes.ravel())


def _png(fig) -> bytes:
    """PNG bytes without the Software text chunk, so the same figure gives the same bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()


def _no_data(ax, text: str = "not measured") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#666666")
    ax.set_xticks([])
    ax.set_yticks([])


def quality_chart(model: str, rows: dict[str, dict]) -> bytes:
    """Grouped bars: each quality metric, one bar per run (baseline included), 95 % CI error bars."""
    metrics = [m for m in TABLE_QUALITY if any(r.get(m) is not None for r in rows.values())]
    fig, (ax,) = _figure(1)
    x = np.arange(len(metrics))
    width = 0.8 / max(len(rows), 1)
    for i, (method, row) in enumerate(rows.items()):
        vals = np.array([_nan(row.get(m)) for m in metrics])
        lo = np.array([_nan(row.get(f"{m}_ci_low")) for m in metrics])
        hi = np.array([_nan(row.get(f"{m}_ci_high")) for m in metrics])
        err = np.nan_to_num(np.vstack([vals - lo, hi - vals]), nan=0.0).clip(min=0.0)
        ax.bar(x + (i - (len(rows) - 1) / 2) * width, vals, width, yerr=err, capsize=2, label=method,
               color=_colour(method, list(rows)), error_kw={"elinewidth": 0.8})
    ax.set_xticks(x, [DISPLAY_NAMES[m] for m in metrics])
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("score (0–1)")
    ax.set_title(f"{model}: test quality with 95 % CI")
    ax.legend(fontsize="small", ncols=max(len(rows), 1), loc="upper center")
    return _png(fig)


def _hbars(ax, rows: list[dict], key: str, title: str, methods: list[str]) -> None:
    vals = [row.get(key) for row in rows]
    if all(v is None for v in vals):
        ax.set_title(title)
        _no_data(ax)
        return
    y = np.arange(len(rows))
    ax.barh(y, [_nan(v) for v in vals], color=[_colour(r["method"], methods) for r in rows])
    for yi, v in zip(y, vals, strict=True):
        ax.text(0 if v is None else v, yi, " –" if v is None else f" {v:.4g}", va="center", fontsize="small")
    ax.set_yticks(y, [r["method"] for r in rows])
    ax.invert_yaxis()
    ax.set_title(title)
    ax.margins(x=0.25)


def cost_chart(model: str, rows: dict[str, dict]) -> bytes:
    """Small multiples of training cost per tuned method: time, peak memory, trainable %, artifact size."""
    tuned = [r for m, r in rows.items() if m != "baseline"]
    methods = list(rows)
    fig, axes = _figure(2, 2, (10.0, 6.0))
    kind = MEMORY_KINDS.get(tuned[0].get("memory_kind") or "", "") if tuned else ""
    panels = (("train_seconds", "training time (s)"),
              ("peak_memory_mb", f"peak memory (MB{', ' + kind if kind else ''})"),
              ("trainable_percent", "trainable parameters (%)"), ("artifact_size_mb", "artifact size (MB)"))
    for ax, (key, title) in zip(axes, panels, strict=True):
        if tuned:
            _hbars(ax, tuned, key, title, methods)
        else:
            ax.set_title(title)
            _no_data(ax, "no tuned runs")
    fig.suptitle(f"{model}: training cost")
    return _png(fig)


def timeseries_chart(model: str, by_method: dict[str, list[Run]]) -> bytes:
    """Memory (and GPU memory and power when measured) over training time, every run overlaid."""
    runs = [(i, r) for m, rs in by_method.items() if m != "baseline" for i, r in enumerate(rs)]
    series = [("rss_mb", "process RSS (MB)"), ("gpu_memory_used_mb", "GPU memory used (MB)"),
              ("gpu_power_w", "GPU power (W)")]
    present = [(k, t) for k, t in series
               if k == "rss_mb" or any(s.get(k) is not None for _, r in runs for s in r.timeseries)]
    fig, axes = _figure(len(present), size=(max(4.2 * len(present) + 1, 8.0), 4.0))
    methods = list(by_method)
    styles = ("-", "--", ":", "-.")
    for ax, (key, title) in zip(axes, present, strict=True):
        drawn = False
        for seed_i, run in runs:
            pts = [(s["t_s"], s[key]) for s in run.timeseries if s.get("t_s") is not None and s.get(key) is not None]
            if pts:
                t, v = zip(*pts, strict=True)
                ax.plot(t, v, styles[seed_i % len(styles)], color=_colour(run.method, methods), label=run.run_id,
                        linewidth=1.2)
                drawn = True
        ax.set_title(title)
        ax.set_xlabel("training time (s)")
        if drawn:
            ax.legend(fontsize="small")
        else:
            _no_data(ax, "no samples")
    fig.suptitle(f"{model}: resources during training")
    return _png(fig)


def _cost_label(key: str, words: str, rows: dict[str, dict]) -> str:
    if key != "peak_memory_mb":
        return f"{words} (s)"
    kinds = {MEMORY_KINDS.get(r.get("memory_kind") or "", "") for m, r in rows.items() if m != "baseline"} - {""}
    return f"{words} (MB{', ' + '/'.join(sorted(kinds)) if kinds else ''})"


def frontier_chart(model: str, rows: dict[str, dict], frontier: dict[str, dict]) -> bytes:
    """The verdict as a chart: F1 with its 95 % CI against each cost, the front drawn as a staircase,
    dominated methods hollow, the untrained baseline's F1 as a dashed line."""
    methods = list(rows)
    base = rows.get("baseline", {})
    fig, axes = _figure(len(COSTS))
    for ax, (key, words) in zip(axes, COSTS, strict=True):
        f = frontier[key]
        for method in (*f["front"], *f["dominated"]):
            r = rows[method]
            lo, hi = r.get("f1_ci_low"), r.get("f1_ci_high")
            yerr = None if lo is None or hi is None else [[max(r["f1"] - lo, 0.0)], [max(hi - r["f1"], 0.0)]]
            colour = _colour(method, methods)
            on_front = method in f["front"]
            ax.errorbar([r[key]], [r["f1"]], yerr=yerr, fmt="o", color=colour, capsize=3, markersize=7,
                        markerfacecolor=colour if on_front else "white")
            label = method if on_front else f"{method} (dominated by {f['dominated'][method]['by']})"
            ax.annotate(label, (r[key], r["f1"]), textcoords="offset points", xytext=(6, 4), fontsize="small")
        pts = sorted((rows[m][key], rows[m]["f1"]) for m in f["front"])
        if len(pts) > 1:
            x, y = zip(*pts, strict=True)
            ax.step(x, y, where="post", color="#444444", linewidth=1, linestyle=":", label="front")
            ax.legend(fontsize="small", loc="lower right")
        if base.get("f1") is not None:
            ax.axhline(base["f1"], color=_BASELINE_COLOUR, linestyle="--", linewidth=1)
            ax.annotate("baseline (untrained)", (0, base["f1"]), xycoords=("axes fraction", "data"),
                        xytext=(4, 4), textcoords="offset points", fontsize="small", color=_BASELINE_COLOUR)
        if not f["front"]:
            _no_data(ax)
        ax.set_xlabel(_cost_label(key, words, rows))
        ax.set_ylabel("test F1 (95 % CI)")
        ax.set_ylim(0, 1.05)
        ax.margins(x=0.3)
    fig.suptitle(f"{model}: quality vs cost (filled: on the front; hollow: dominated)")
    return _png(fig)


def forest_chart(model: str, comparison: dict) -> bytes:
    """Every paired comparison of one model: Δ with its family-wide (Bonferroni) interval per metric;
    filled when the adjusted p < α, hollow otherwise."""
    pairs = comparisons(comparison, model)
    metrics = [m for m in TABLE_QUALITY if any(m in tests for *_, tests in pairs)]
    fig, axes = _figure(max(len(metrics), 1), size=(2.1 * max(len(metrics), 1) + 2.2, 0.42 * len(pairs) + 1.6))
    labels = [f"{b} − {a}" for _, a, b, _ in pairs]
    y = np.arange(len(pairs))
    for i, (ax, metric) in enumerate(zip(axes, metrics, strict=False)):
        for yi, (*_, tests) in zip(y, pairs, strict=True):
            t = tests.get(metric)
            if t is None:
                continue
            colour = "#1f4e9a" if t["significant"] else "#888888"
            ax.errorbar([t["delta"]], [yi], xerr=[[t["delta"] - t["ci_low_adjusted"]],
                                                  [t["ci_high_adjusted"] - t["delta"]]],
                        fmt="o", color=colour, capsize=2, markerfacecolor=colour if t["significant"] else "white")
        ax.axvline(0, color="#999999", linewidth=0.8)
        ax.set_yticks(y, labels if i == 0 else [""] * len(labels))
        ax.invert_yaxis()
        ax.set_title(DISPLAY_NAMES[metric], fontsize="medium")
        ax.margins(x=0.15)
    if not metrics:
        _no_data(axes[0], "no comparisons")
    fig.suptitle(f"{model}: Δ with family-wise (Bonferroni) 95 % CI; filled: significant after Holm")
    return _png(fig)


def build_charts(runs: Runs, comparison: dict) -> dict[str, bytes]:
    """``{file name: PNG bytes}`` per model: frontier, forest, quality, cost, time series."""
    charts: dict[str, bytes] = {}
    for model, by_method in runs.items():
        rows = comparison[model]
        charts[f"frontier_{model}.png"] = frontier_chart(model, rows, comparison["frontier"][model])
        charts[f"forest_{model}.png"] = forest_chart(model, comparison)
        charts[f"quality_{model}.png"] = quality_chart(model, rows)
        charts[f"cost_{model}.png"] = cost_chart(model, rows)
        charts[f"timeseries_{model}.png"] = timeseries_chart(model, by_method)
    return charts
