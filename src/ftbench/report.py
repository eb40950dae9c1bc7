"""Compare the runs: tables with confidence intervals and paired tests, charts, and one HTML report.

Everything here reads what the baseline / train / evaluate stages wrote and never recomputes a model
output, so the report stage takes seconds and reruns whenever any run changes.

Design choices, and why:

* **Significance before wording.** A method is called better or worse than another only when the
  paired test on the same test questions is significant (p < 0.05); otherwise the text says
  "no significant difference". Test sets of a hundred questions make differences of a few F1 points
  noise, and the reference study's single-run table cannot tell them apart.
* **Several seeds.** A method row gives the mean across seeds with the sample sd (``f1_sd``). Its CI
  and the paired tests are *pooled over seeds*: each test example's score is averaged across the
  seeds, and examples are resampled (so the unit stays the test question, and a method is compared by
  its expected score over training seeds). BLEU is a corpus statistic with no per-example score: its
  CI resamples examples and recomputes every seed's corpus BLEU from the same resample (mean over
  seeds), while its paired tests use the *first* seed's predictions, which ``paired_test`` supports.
  With one seed (the default) the CIs are the ones the evaluate stage wrote to eval.json.
* **Honest cost columns.** Training cost (time, memory, power, energy) exists for tuned rows only;
  the baseline gets "–" there and its inference cost in the inference columns. Peak memory is GPU
  ``max_memory_allocated`` on a GPU run, else peak process RSS, and ``memory_kind`` says which.
  Nothing is estimated: a null input is "–" in tables and an empty cell in CSVs.
* **Byte-stable outputs.** Charts are drawn on ``matplotlib.figure.Figure`` (Agg, no pyplot state)
  and saved without the "Software" PNG text chunk, so reruns on the same inputs give the same bytes.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ftbench.io import FtbenchError, atomic_dir, read_json_file, read_jsonl, write_bytes, write_json, write_text
from ftbench.metrics import (
    CI_METRICS,
    DISPLAY_NAMES,
    bootstrap_ci,
    bootstrap_ci_seed_mean_bleu,
    format_delta,
    normalize_answer,
    paired_test,
)
from ftbench.params import Params
from ftbench.stage import predictions_path, run_metrics_dir, run_name

QUALITY: tuple[str, ...] = CI_METRICS
#: Column order of the main table: the study's (F1, BLEU, BERTScore, R-1/2/L) with EM after F1.
TABLE_QUALITY: tuple[str, ...] = ("f1", "em", "bleu", "bertscore", "rouge1", "rouge2", "rougeL")
#: Fields averaged across seeds that also get a sample sd when a method has several seeds.
SD_FIELDS: tuple[str, ...] = (*QUALITY, "train_seconds")
#: train.json fields copied (mean across seeds) into a tuned row.
TRAIN_FIELDS: tuple[str, ...] = (
    "trainable_percent", "trainable_params", "train_seconds", "tokens_per_s", "samples_per_s", "mfu",
    "gpu_power_mean_w", "gpu_power_peak_w", "energy_wh", "artifact_size_mb", "base_model_size_mb", "final_loss",
    "val_loss",
)
#: eval.json ``inference`` fields copied into every row.
INFERENCE_FIELDS: tuple[str, ...] = (
    "latency_mean_s", "latency_p50_s", "latency_p95_s", "generated_tokens_per_s", "examples_per_s",
)
ALPHA = 0.05

DATA_JSON = Path("metrics/data.json")
COMPARISON_JSON = Path("metrics/comparison.json")
COMPARISON_CSV = Path("metrics/comparison.csv")
COMPARISON_MD = Path("metrics/comparison.md")
PLOTS_DIR = Path("plots")
IMAGES_DIR = PLOTS_DIR / "images"  # a directory DVC renders as image plots (dvc.yaml: resource_report plots)
HTML_REPORT = Path("reports/index.html")

QUALITY_CSV_COLUMNS = ("run", "model", "method", *QUALITY)
COST_CSV_COLUMNS = ("run", "model", "method", "train_seconds", "tokens_per_s", "peak_memory_mb", "energy_wh",
                    "artifact_size_mb", "trainable_percent", "latency_p50_s")

STUDY_LABEL = "as reported by the study (validation set, different models/hardware)"
STUDY_COLUMNS = ("model", "method", "trainable %", "F1", "BLEU", "BERTScore", "R-1", "R-2", "R-L", "power W",
                 "memory GB")
#: The reference study's published table (BRIEF.md §1). Not comparable number for number with ours:
#: other models, other hardware, the validation set, and its own BLEU/ROUGE tokenisation.
STUDY_TABLE: tuple[tuple[Any, ...], ...] = (
    ("Llama 3.2 1B", "baseline", None, 0.0234, 0.0148, 0.8175, 0.0663, 0.0263, 0.0644, 68.97, 16.59),
    ("Llama 3.2 1B", "LoRA", 0.069, 0.1825, 0.2243, 0.8979, 0.4664, 0.3123, 0.4638, 37.15, 4.30),
    ("Llama 3.2 1B", "QLoRA", 0.069, 0.1866, 0.2653, 0.9113, 0.5471, 0.3860, 0.5457, 37.48, 2.74),
    ("Llama 3.2 1B", "top layer", 4.92, 0.0487, 0.0267, 0.8167, 0.0942, 0.0461, 0.0922, 38.16, 4.51),
    ("Llama 3.2 3B", "baseline", None, 0.0914, 0.0561, 0.8444, 0.1836, 0.1207, 0.1825, 66.70, 22.79),
    ("Llama 3.2 3B", "LoRA", 0.2848, 0.0950, 0.1137, 0.8613, 0.2931, 0.2090, 0.2916, 84.01, 13.40),
    ("Llama 3.2 3B", "QLoRA", 0.2848, 0.0927, 0.0953, 0.8587, 0.2686, 0.1993, 0.2680, 84.11, 4.38),
    ("Llama 3.2 3B", "top layer", 31.10, 0.0640, 0.0327, 0.8169, 0.1073, 0.0668, 0.1068, 96.85, 20.25),
    ("Mistral 7B", "baseline", None, 0.1041, 0.0526, 0.8444, 0.2072, 0.1179, 0.2044, 48.00, 26.15),
    ("Mistral 7B", "LoRA", 0.0469, 0.1998, 0.2579, 0.9090, 0.5250, 0.3619, 0.5240, 72.67, 29.75),
    ("Mistral 7B", "QLoRA", 0.0469, 0.5175, 0.4700, 0.9507, 0.7673, 0.5497, 0.7665, 77.06, 8.16),
    ("Mistral 7B", "top layer", 7.87, 0.0879, 0.0471, 0.8255, 0.1652, 0.0867, 0.1615, 72.08, 29.74),
)

DEFINITIONS: tuple[tuple[str, str], ...] = (
    ("F1", "SQuAD token F1 after SQuAD normalisation (lower-case, strip punctuation and articles), averaged "
           "over test examples (the study's \"Macro F1\")."),
    ("EM", "exact match after the same normalisation, averaged."),
    ("BLEU", "sacrebleu corpus BLEU (13a tokenisation, no smoothing) divided by 100."),
    ("ROUGE-1/2/L (R-1/R-2/R-L)", "rouge-score F-measure with the Porter stemmer, averaged."),
    ("BERTScore", "raw F1 (no baseline rescaling), averaged; the encoder and layer are named in eval.json."),
    ("[lo, hi]", "95 % percentile bootstrap confidence interval over test examples."),
    ("Δ", "tuned minus reference on the same test examples: paired-bootstrap 95 % CI, two-sided p from an "
          f"approximate randomisation test. Called better/worse only if p < {ALPHA}."),
    ("trainable %", "parameters with requires_grad over all parameters of the base model."),
    ("train s", "wall-clock seconds of the training loop; tokens/s counts non-padding tokens."),
    ("memory", "peak GPU memory allocated (torch.cuda.max_memory_allocated) on a GPU run, else peak process "
               "RSS; GB = 1024 MB (MiB-based)."),
    ("power W", "GPU board power from NVML, mean and peak over the run; empty on a CPU run."),
    ("energy Wh", "NVML energy counter (or integrated power) on a GPU, RAPL on a CPU where readable; "
                  "empty when not measurable."),
    ("latency", "seconds per example at batch size 1 (p50, p95); generated tokens/s over batched generation."),
    ("artifact MB", "on-disk size of what the method must ship (adapter or tuned blocks); base model MB: the "
                    "base weights it is applied to."),
    ("MFU", "training FLOPs / (train s x peak FLOP/s). FLOPs per token count what the method runs: forward "
            "through every linear layer, backward down to the lowest trainable one, weight gradients for "
            "trainable weights (6N for full tuning, about 4N for LoRA). The peak comes from monitor.peak_flops "
            "or, when that is null, a matmul probe on the same device (peak_flops_source in train.json)."),
)


# ------------------------------------------------------------------------------------------ loading


@dataclass
class Run:
    """One evaluated run (the baseline or one method × seed) with everything the report reads."""

    model: str
    method: str
    seed: int | None
    run_id: str
    eval: dict
    train: dict | None
    predictions: list[dict]
    timeseries: list[dict[str, float | None]]

    @cached_property
    def answers(self) -> list[str]:
        return [p["answer"] for p in self.predictions]


#: model -> {"baseline": [run], method: [runs in params.run.seeds order]}
Runs = dict[str, dict[str, list[Run]]]


RERUN = "run dvc repro (the stage that writes it has not run, or was interrupted)"


def _missing(path: Path) -> FtbenchError:
    return FtbenchError(f"{path}: file not found", fix=RERUN)


def _read_json(path: Path) -> Any:
    return read_json_file(path, fix=RERUN)


def _read_predictions(path: Path) -> list[dict]:
    if not path.is_file():
        raise _missing(path)
    try:
        rows = read_jsonl(path)
    except json.JSONDecodeError as e:
        raise FtbenchError(f"{path}: invalid JSON line ({e.msg})", fix=RERUN) from None
    if not rows:
        raise FtbenchError(f"{path} has no predictions", fix=RERUN)
    return rows


def read_timeseries(path: Path) -> list[dict[str, float | None]]:
    """A resource time series as dicts of floats; empty cells (not measured) become None."""
    if not path.is_file():
        raise _missing(path)
    with open(path, encoding="utf-8", newline="") as f:
        return [{k: (float(v) if v not in ("", None) else None) for k, v in row.items()} for row in csv.DictReader(f)]


def _load_run(model: str, method: str, seed: int | None) -> Run:
    run_id = "baseline" if seed is None else run_name(method, seed)
    mdir = run_metrics_dir(model, run_id)
    train = ts = None
    if seed is not None:
        train = _read_json(mdir / "train.json")
        ts = read_timeseries(mdir / "train_timeseries.csv")
    return Run(model=model, method=method, seed=seed, run_id=run_id, eval=_read_json(mdir / "eval.json"),
               train=train, predictions=_read_predictions(predictions_path(model, run_id)), timeseries=ts or [])


def load_runs(params: Params) -> Runs:
    """Read every run that params.run lists (stale run directories are ignored).

    All runs of a model must hold the same test examples in the same order, or paired tests would pair
    unrelated questions.
    """
    runs: Runs = {}
    for model in params.run.models:
        base = _load_run(model, "baseline", None)
        by_method: dict[str, list[Run]] = {"baseline": [base]}
        ids = [p["id"] for p in base.predictions]
        for method in params.run.methods:
            by_method[method] = [_load_run(model, method, seed) for seed in params.run.seeds]
            for run in by_method[method]:
                if [p["id"] for p in run.predictions] != ids:
                    raise FtbenchError(
                        f"{predictions_path(model, run.run_id)}: test examples differ from "
                        f"{predictions_path(model, 'baseline')}",
                        fix="run dvc repro so that every run is evaluated on the same test split")
        runs[model] = by_method
    return runs


def load_data_summary(path: Path = DATA_JSON) -> dict:
    return _read_json(path)


# ------------------------------------------------------------------------------------------ statistics


def _mean(values: Sequence[float | None]) -> float | None:
    if not values or any(v is None for v in values):
        return None
    return float(np.mean(values))


def _sd(values: Sequence[float | None]) -> float | None:
    if len(values) < 2 or any(v is None for v in values):
        return None
    return float(np.std(values, ddof=1))


def _pooled(runs: Sequence[Run], metric: str) -> list[dict] | None:
    """Per-example scores averaged across seeds, or None when the metric was not computed."""
    columns = [[p.get(metric) for p in r.predictions] for r in runs]
    if any(v is None for col in columns for v in col):
        return None
    return [{metric: float(np.mean(vals))} for vals in zip(*columns, strict=True)]


def _ci(runs: Sequence[Run], metric: str, references: list[str], n_resamples: int,
        seed: int) -> tuple[float | None, float | None]:
    if len(runs) == 1:
        ci = runs[0].eval.get("ci95", {}).get(metric)
        return (float(ci[0]), float(ci[1])) if ci else (None, None)
    if metric == "bleu":
        return bootstrap_ci_seed_mean_bleu([r.answers for r in runs], references, n_resamples=n_resamples,
                                           seed=seed, alpha=ALPHA)
    pooled = _pooled(runs, metric)
    if pooled is None:
        return None, None
    return bootstrap_ci(pooled, metric, n_resamples=n_resamples, seed=seed, alpha=ALPHA)


def paired_tests(a: Sequence[Run], b: Sequence[Run], references: list[str], *, n_resamples: int,
                 seed: int) -> dict[str, dict]:
    """``{metric: {delta, ci_low, ci_high, p_value, significant}}`` for b − a on the same examples.

    Per-example metrics are pooled over seeds; BLEU uses each side's first seed (see module doc).
    """
    out: dict[str, dict] = {}
    for metric in QUALITY:
        if metric == "bleu":
            test = paired_test(a[0].predictions, b[0].predictions, "bleu", n_resamples=n_resamples, seed=seed,
                               alpha=ALPHA, predictions_a=a[0].answers, predictions_b=b[0].answers,
                               references=references)
        else:
            pa, pb = _pooled(a, metric), _pooled(b, metric)
            if pa is None or pb is None:
                continue
            test = paired_test(pa, pb, metric, n_resamples=n_resamples, seed=seed, alpha=ALPHA)
        out[metric] = {k: test[k] for k in ("delta", "ci_low", "ci_high", "p_value", "significant")}
    return out


def _peak_memory(stats: dict | None) -> tuple[float | None, str | None]:
    """GPU allocated peak when the run used a GPU, else peak RSS, with the kind it is."""
    if not stats:
        return None, None
    if stats.get("gpu_peak_memory_allocated_mb") is not None:
        return stats["gpu_peak_memory_allocated_mb"], "gpu_allocated"
    if stats.get("peak_rss_mb") is not None:
        return stats["peak_rss_mb"], "cpu_rss"
    return None, None


def _row(model: str, method: str, runs: Sequence[Run], references: list[str], n_resamples: int,
         seed: int) -> dict[str, Any]:
    tuned = method != "baseline"
    row: dict[str, Any] = {
        "run": f"{model}/{method}", "model": model, "method": method,
        "seeds": ",".join(str(r.seed) for r in runs) if tuned else None,
        "n": runs[0].eval.get("n"),
        "device": runs[0].train.get("device") if tuned else None,
    }
    values: dict[str, list] = {}
    for metric in QUALITY:
        values[metric] = [r.eval.get(metric) for r in runs]
        row[metric] = _mean(values[metric])
        lo, hi = _ci(runs, metric, references, n_resamples, seed) if row[metric] is not None else (None, None)
        row[f"{metric}_ci_low"], row[f"{metric}_ci_high"] = lo, hi
    for name in TRAIN_FIELDS:
        values[name] = [r.train.get(name) for r in runs] if tuned else [None]
        row[name] = _mean(values[name])
    memory = [_peak_memory(r.train) for r in runs] if tuned else [(None, None)]
    row["peak_memory_mb"] = _mean([m for m, _ in memory])
    row["memory_kind"] = memory[0][1]
    row["energy_source"] = runs[0].train.get("energy_source") if tuned else None
    row["peak_flops_source"] = runs[0].train.get("peak_flops_source") if tuned else None
    inference = [r.eval.get("inference") or {} for r in runs]
    for name in INFERENCE_FIELDS:
        row[name] = _mean([inf.get(name) for inf in inference])
    inf_memory = [_peak_memory(inf) for inf in inference]
    row["inference_peak_memory_mb"] = _mean([m for m, _ in inf_memory])
    row["inference_memory_kind"] = inf_memory[0][1]
    for name in ("gpu_power_mean_w", "gpu_power_peak_w", "energy_wh"):
        row[f"inference_{name}"] = _mean([inf.get(name) for inf in inference])
    if len(runs) > 1:
        for name in SD_FIELDS:
            row[f"{name}_sd"] = _sd(values[name])
    return row


def compare(runs: Runs, *, n_resamples: int, seed: int) -> dict[str, Any]:
    """The content of metrics/comparison.json.

    ``{model: {method: row}}`` with ``row["vs_baseline"]`` for tuned methods, plus
    ``{"pairwise": {model: {"<b>_vs_<a>": tests}}}`` for every pair of methods (delta = b − a).
    """
    out: dict[str, Any] = {}
    pairwise: dict[str, dict] = {}
    for model, by_method in runs.items():
        base = by_method["baseline"]
        references = [p["reference"] for p in base[0].predictions]
        rows: dict[str, dict] = {}
        for method, method_runs in by_method.items():
            row = _row(model, method, method_runs, references, n_resamples, seed)
            if method != "baseline":
                row["vs_baseline"] = paired_tests(base, method_runs, references, n_resamples=n_resamples, seed=seed)
            rows[method] = row
        out[model] = rows
        methods = [m for m in by_method if m != "baseline"]
        pairwise[model] = {
            f"{b}_vs_{a}": paired_tests(by_method[a], by_method[b], references, n_resamples=n_resamples, seed=seed)
            for a, b in itertools.combinations(methods, 2)
        }
    out["pairwise"] = pairwise
    return out


def rows_of(comparison: dict[str, Any]) -> list[dict[str, Any]]:
    """All (model, method) rows in report order: per model, the baseline first, then params order."""
    return [row for model, rows in comparison.items() if model != "pairwise" for row in rows.values()]


# ------------------------------------------------------------------------------------------ text


def fmt(value: float | None, digits: int = 3) -> str:
    """A number for tables; "–" for a null (never invented)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def fmt_pct(value: float | None) -> str:
    """Trainable % to 4 significant digits, as the study prints it (0.069, 4.92, 31.1)."""
    return "–" if value is None else f"{value:.4g}"


def quality_cell(row: dict, metric: str) -> str:
    """``0.412 [0.35, 0.47]``, with ``± sd`` after the mean when there are several seeds."""
    value = row.get(metric)
    if value is None:
        return "–"
    text = fmt(value)
    if row.get(f"{metric}_sd") is not None:
        text += f" ± {fmt(row[f'{metric}_sd'])}"
    lo, hi = row.get(f"{metric}_ci_low"), row.get(f"{metric}_ci_high")
    if lo is not None and hi is not None:
        text += f" [{lo:.2f}, {hi:.2f}]"
    return text


def _gb(mb: float | None) -> float | None:
    return None if mb is None else mb / 1024.0


def _memory_label(row: dict, key: str = "memory_kind") -> str:
    return {"gpu_allocated": " (GPU)", "cpu_rss": " (RSS)"}.get(row.get(key) or "", "")


MAIN_HEADER = ("model", "method", "trainable %", "F1", "EM", "BLEU", "BERTScore", "R-1", "R-2", "R-L",
               "power W (peak)", "memory GB")
COST_HEADER = ("model", "method", "train s", "tokens/s", "MFU", "power W mean", "energy Wh", "artifact MB",
               "base model MB", "latency p50 s", "latency p95 s", "gen tokens/s", "inference memory GB")


def main_table(comparison: dict) -> list[list[str]]:
    """The study's columns plus EM: quality with CIs; power and memory of training (– for the baseline)."""
    return [[row["model"], row["method"], fmt_pct(row["trainable_percent"]),
             *(quality_cell(row, m) for m in TABLE_QUALITY),
             fmt(row["gpu_power_peak_w"], 1), fmt(_gb(row["peak_memory_mb"]), 2) + _memory_label(row)]
            for row in rows_of(comparison)]


def cost_table(comparison: dict) -> list[list[str]]:
    return [[row["model"], row["method"], fmt(row["train_seconds"], 1), fmt(row["tokens_per_s"], 1),
             fmt(row["mfu"], 4), fmt(row["gpu_power_mean_w"], 1), fmt(row["energy_wh"], 3),
             fmt(row["artifact_size_mb"], 2), fmt(row["base_model_size_mb"], 1),
             fmt(row["latency_p50_s"], 3), fmt(row["latency_p95_s"], 3),
             fmt(row["generated_tokens_per_s"], 1),
             fmt(_gb(row["inference_peak_memory_mb"]), 2) + _memory_label(row, "inference_memory_kind")]
            for row in rows_of(comparison)]


def study_table() -> list[list[str]]:
    return [[model, method, fmt_pct(pct), *(f"{v:.4f}" for v in quality),
             f"{power:.2f}", f"{mem:.2f}"]
            for model, method, pct, *quality, power, mem in STUDY_TABLE]


def verdict(a: str, b: str, metric: str, test: dict) -> str:
    """The wording rule: "better"/"worse" only when the paired test is significant."""
    name = DISPLAY_NAMES.get(metric, metric)
    if not test["significant"]:
        return f"no significant difference in {name} between {b} and {a}"
    return f"{b} is {'better' if test['delta'] > 0 else 'worse'} than {a} on {name}"


def delta_line(a: str, b: str, metric: str, test: dict) -> str:
    """``ΔF1 = +0.031 [−0.008, 0.070], p = 0.12 — no significant difference in F1 between lora and baseline``."""
    return f"{format_delta({**test, 'metric': metric})} — {verdict(a, b, metric, test)}"


def delta_blocks(comparison: dict) -> list[tuple[str, list[tuple[str, bool]]]]:
    """(heading, [(line, significant)]) per tuned method vs the baseline, then per pair of methods."""
    blocks = []
    for row in rows_of(comparison):
        if "vs_baseline" in row:
            blocks.append((f"{row['model']}: {row['method']} vs baseline",
                           [(delta_line("baseline", row["method"], m, t), t["significant"])
                            for m, t in row["vs_baseline"].items()]))
    for model, pairs in comparison.get("pairwise", {}).items():
        for key, tests in pairs.items():
            b, _, a = key.partition("_vs_")
            blocks.append((f"{model}: {b} vs {a}",
                           [(delta_line(a, b, m, t), t["significant"]) for m, t in tests.items()]))
    return blocks


DATA_HEADER = ("split", "documents", "events", "QA pairs available", "QA pairs used", "answers not in context")


def event_type_table(data: dict) -> tuple[list[str], list[list[str]]]:
    """QA pairs used per event type (rows) and split (columns), then per role."""
    splits = data.get("splits") or {}
    header = ["event type / role", *splits]
    rows = []
    for key in ("by_event_type", "by_role"):
        names = sorted({n for s in splits.values() for n in (s.get(key) or {})})
        rows += [[n, *(str((s.get(key) or {}).get(n, 0)) for s in splits.values())] for n in names]
    return header, rows


def data_tables(data: dict) -> tuple[list[list[str]], list[list[str]]]:
    """(per-split documents / QA pairs, dropped records by reason) from metrics/data.json."""
    splits = [[name, *(str(s.get(k, "–")) for k in ("documents", "events", "qa_pairs_available", "qa_pairs",
                                                     "answers_not_in_context"))]
              for name, s in (data.get("splits") or {}).items()]
    not_in_context = data.get("qa_pairs", 0) - data.get("answers_in_context", 0) if "qa_pairs" in data else "–"
    splits.append(["all", str(data.get("documents", "–")), str(data.get("events", "–")), str(data.get("qa_pairs", "–")),
                   "", str(not_in_context)])
    dropped = [[reason, str(count)] for reason, count in (data.get("dropped") or {}).items()]
    return splits, dropped


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _n_text(comparison: dict) -> str:
    ns = sorted({row["n"] for row in rows_of(comparison) if row.get("n") is not None})
    return "/".join(str(n) for n in ns) or "–"


def render_markdown(comparison: dict, data: dict, *, n_resamples: int) -> str:
    splits, dropped = data_tables(data)
    out = [
        "# Fine-tuning comparison",
        "",
        f"Test split, n = {_n_text(comparison)} questions per run. Quality on a 0–1 scale as "
        "`value [95 % CI]` (mean ± sd across seeds when there are several). Power and memory are those of "
        "training; the baseline is not trained (its inference cost is in the cost table).",
        "",
        _md_table(MAIN_HEADER, main_table(comparison)),
        "",
        "## Cost",
        "",
        _md_table(COST_HEADER, cost_table(comparison)),
        "",
        "## Paired tests",
        "",
        f"Same test questions for every run; Δ = method − reference, paired bootstrap 95 % CI, two-sided p "
        f"from an approximate randomisation test ({n_resamples} resamples). **Wording rule:** a method is called "
        f"better or worse than another only when p < {ALPHA}; otherwise: no significant difference.",
        "",
    ]
    for heading, lines in delta_blocks(comparison):
        out += [f"### {heading}", "", *(f"- {line}" for line, _ in lines), ""]
    out += ["## Data", "", _md_table(DATA_HEADER, splits), ""]
    type_header, type_rows = event_type_table(data)
    if type_rows:
        out += ["QA pairs used, per event type and per role:", "", _md_table(type_header, type_rows), ""]
    out += [_md_table(("dropped because", "records"), dropped) if dropped else "No records dropped.", ""]
    out += ["## Reference study", "", f"Its published figures, {STUDY_LABEL}:", "",
            _md_table(STUDY_COLUMNS, study_table()), ""]
    out += ["## Definitions", "", *(f"- **{term}**: {text}" for term, text in DEFINITIONS), ""]
    return "\n".join(out)


def _csv_text(columns: Sequence[str], rows: Sequence[dict]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else row[c] for c in columns])
    return buf.getvalue()


def comparison_csv_columns() -> list[str]:
    """Every field of a comparison row (as ``_row`` builds it), flattened as ``_flat`` does."""
    cols = ["model", "method", "run", "seeds", "n", "device"]
    for m in QUALITY:
        cols += [m, f"{m}_ci_low", f"{m}_ci_high", f"{m}_sd"]
    cols += [*TRAIN_FIELDS, "train_seconds_sd", "peak_memory_mb", "memory_kind", "energy_source",
             "peak_flops_source", *INFERENCE_FIELDS, "inference_peak_memory_mb", "inference_memory_kind",
             "inference_gpu_power_mean_w", "inference_gpu_power_peak_w", "inference_energy_wh"]
    for m in QUALITY:
        cols += [f"{m}_delta_vs_baseline", f"{m}_p_vs_baseline"]
    return cols


def _flat(row: dict) -> dict:
    flat = {k: v for k, v in row.items() if k != "vs_baseline"}
    for m, t in (row.get("vs_baseline") or {}).items():
        flat[f"{m}_delta_vs_baseline"], flat[f"{m}_p_vs_baseline"] = t["delta"], t["p_value"]
    return flat


def write_tables(comparison: dict, data: dict, *, n_resamples: int) -> None:
    """metrics/comparison.{json,csv,md}, each written atomically."""
    write_json(COMPARISON_JSON, comparison)
    write_text(COMPARISON_CSV, _csv_text(comparison_csv_columns(), [_flat(r) for r in rows_of(comparison)]))
    write_text(COMPARISON_MD, render_markdown(comparison, data, n_resamples=n_resamples))


def summary_line(comparison: dict) -> str:
    parts = []
    for row in rows_of(comparison):
        text = f"{row['run']} F1={fmt(row['f1'])}"
        test = (row.get("vs_baseline") or {}).get("f1")
        if test:
            text += f" ({'significant' if test['significant'] else 'n.s.'} vs baseline)"
        parts.append(text)
    return "; ".join(parts) + f" -> {COMPARISON_MD}, {HTML_REPORT}"


# ------------------------------------------------------------------------------------------ charts

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
    kind = _memory_label(tuned[0]).strip(" ()") if tuned else ""
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


def tradeoff_chart(model: str, rows: dict[str, dict]) -> bytes:
    """F1 against training time and against peak memory; the baseline F1 as a dashed line."""
    methods = list(rows)
    base = rows.get("baseline", {})
    tuned = [r for m, r in rows.items() if m != "baseline"]
    fig, axes = _figure(2)
    for ax, (key, label) in zip(axes, (("train_seconds", "training time (s)"),
                                       ("peak_memory_mb", "peak training memory (MB)")), strict=True):
        pts = [r for r in tuned if r.get(key) is not None and r.get("f1") is not None]
        for r in pts:
            lo, hi = r.get("f1_ci_low"), r.get("f1_ci_high")
            yerr = None if lo is None or hi is None else [[max(r["f1"] - lo, 0.0)], [max(hi - r["f1"], 0.0)]]
            ax.errorbar([r[key]], [r["f1"]], yerr=yerr, fmt="o", color=_colour(r["method"], methods), capsize=3)
            ax.annotate(r["method"], (r[key], r["f1"]), textcoords="offset points", xytext=(6, 4), fontsize="small")
        if base.get("f1") is not None:
            ax.axhline(base["f1"], color=_BASELINE_COLOUR, linestyle="--", linewidth=1)
            ax.annotate("baseline (untrained)", (0, base["f1"]), xycoords=("axes fraction", "data"),
                        xytext=(4, 4), textcoords="offset points", fontsize="small", color=_BASELINE_COLOUR)
        if not pts:
            _no_data(ax)
        ax.set_xlabel(label)
        ax.set_ylabel("test F1")
        ax.set_ylim(0, 1.05)
        ax.margins(x=0.3)
    fig.suptitle(f"{model}: quality vs cost")
    return _png(fig)


def build_charts(runs: Runs, comparison: dict) -> dict[str, bytes]:
    """``{file name: PNG bytes}``: quality, cost, time series and trade-off per model."""
    charts: dict[str, bytes] = {}
    for model, by_method in runs.items():
        rows = comparison[model]
        charts[f"quality_{model}.png"] = quality_chart(model, rows)
        charts[f"cost_{model}.png"] = cost_chart(model, rows)
        charts[f"timeseries_{model}.png"] = timeseries_chart(model, by_method)
        charts[f"tradeoff_{model}.png"] = tradeoff_chart(model, rows)
    return charts


def write_plots(comparison: dict, charts: dict[str, bytes]) -> None:
    """plots/quality.csv and plots/cost.csv (DVC bar charts), and plots/images/ replaced as a whole
    so that charts of models no longer in params go."""
    rows = rows_of(comparison)
    write_text(PLOTS_DIR / "quality.csv", _csv_text(QUALITY_CSV_COLUMNS, rows))
    write_text(PLOTS_DIR / "cost.csv", _csv_text(COST_CSV_COLUMNS, rows))
    with atomic_dir(IMAGES_DIR) as tmp:
        for name, data in charts.items():
            write_bytes(tmp / name, data)


# ------------------------------------------------------------------------------------------ HTML

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:1250px;padding:0 1rem;
color:#222;line-height:1.45}
h1{margin-bottom:.2rem}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2.2rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.86rem}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:right;vertical-align:top}
th{background:#f3f4f6}td.l,th.l{text-align:left}
tr.baseline td{background:#fafafa;color:#555}
.note{color:#555;font-size:.9rem}.sig{font-weight:600}
img{max-width:100%;border:1px solid #eee;margin:.4rem 0}
nav a{margin-right:1rem}
.controls{position:sticky;top:0;background:#fff;padding:.5rem 0;border-bottom:1px solid #ddd;z-index:1}
.q{border:1px solid #ddd;border-radius:6px;padding:.6rem .8rem;margin:.7rem 0}
.q .meta{color:#666;font-size:.8rem}.q details{font-size:.85rem;color:#333;margin:.3rem 0}
.q table{width:100%}.q td{text-align:left}.q td.f1{text-align:right;width:4rem}
td.good{background:#e6f4ea}td.part{background:#fff7e0}td.bad{background:#fdecea}
"""

_JS = """
document.querySelectorAll('.browser').forEach(function (b) {
  var sel = b.querySelector('select'), box = b.querySelector('input[type=checkbox]'),
      count = b.querySelector('.count'), qs = b.querySelectorAll('.q');
  function apply() {
    var shown = 0;
    qs.forEach(function (q) {
      var ok = (!sel.value || q.dataset.event === sel.value) && (!box.checked || q.dataset.disagree === '1');
      q.hidden = !ok;
      if (ok) shown++;
    });
    count.textContent = shown + ' of ' + qs.length + ' questions shown';
  }
  sel.addEventListener('change', apply);
  box.addEventListener('change', apply);
  apply();
});
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]], *, left: int = 2,
                row_classes: Sequence[str] | None = None) -> str:
    head = "".join(f'<th class="l">{_e(h)}</th>' if i < left else f"<th>{_e(h)}</th>" for i, h in enumerate(header))
    body = []
    for r, row in enumerate(rows):
        cls = f' class="{_e(row_classes[r])}"' if row_classes and row_classes[r] else ""
        cells = "".join(f'<td class="l">{_e(c)}</td>' if i < left else f"<td>{_e(c)}</td>" for i, c in enumerate(row))
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _f1_class(f1: float | None) -> str:
    if f1 is None:
        return ""
    return "good" if f1 >= 0.999 else ("part" if f1 > 0 else "bad")


def _browser(model: str, by_method: dict[str, list[Run]]) -> str:
    """Per test question: context, reference, and every run's answer with its F1; filterable in JS."""
    runs = [r for rs in by_method.values() for r in rs]
    label = {id(r): (r.method if r.method == "baseline" or len(by_method[r.method]) == 1 else r.run_id) for r in runs}
    base = by_method["baseline"][0].predictions
    events = sorted({p.get("event_type") or "" for p in base} - {""})
    options = '<option value="">all event types</option>' + "".join(
        f'<option value="{_e(ev)}">{_e(ev)}</option>' for ev in events)
    items = []
    for i, ex in enumerate(base):
        answers = [(label[id(r)], r.predictions[i]["answer"], r.predictions[i].get("f1")) for r in runs]
        # "methods disagree": the tuned runs' answers differ (the baseline joins only if one run is tuned)
        compared = [a for r, (_, a, _) in zip(runs, answers, strict=True) if r.method != "baseline"]
        disagree = len({normalize_answer(a) for a in (compared if len(compared) > 1 else
                                                      [a for _, a, _ in answers])}) > 1
        rows = "".join(
            f'<tr><td class="l" style="width:9rem">{_e(name)}</td>'
            f'<td class="{_f1_class(f1)}">{_e(ans) or "<em>(empty)</em>"}</td>'
            f'<td class="f1">{_e(fmt(f1, 2))}</td></tr>' for name, ans, f1 in answers)
        items.append(
            f'<div class="q" data-event="{_e(ex.get("event_type") or "")}" data-disagree="{int(disagree)}">'
            f'<div class="meta">{_e(ex.get("id", i))} · {_e(ex.get("event_type") or "–")}'
            f' · role {_e(ex.get("role") or "–")}'
            f'{" · methods disagree" if disagree else ""}</div>'
            f"<div><strong>Q:</strong> {_e(ex.get('question', ''))}</div>"
            f"<details><summary>context</summary>{_e(ex.get('context', ''))}</details>"
            f"<div><strong>Reference:</strong> {_e(ex.get('reference', ''))}</div>"
            f'<table><thead><tr><th class="l">run</th><th class="l">answer</th><th>F1</th></tr></thead>'
            f"<tbody>{rows}</tbody></table></div>")
    return (f'<div class="browser" data-model="{_e(model)}"><h3>{_e(model)}</h3>'
            f'<div class="controls"><label>event type <select>{options}</select></label> '
            f'<label><input type="checkbox"> methods disagree (tuned answers differ after normalisation)</label> '
            f'<span class="count note"></span></div>{"".join(items)}</div>')


def _img(name: str, data: bytes) -> str:
    return f'<img alt="{_e(name)}" src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}">'


def render_html(comparison: dict, runs: Runs, data: dict, charts: dict[str, bytes], *, n_resamples: int) -> str:
    """The self-contained report: tables, tests, charts, the study's figures and the answer browser."""
    rows = rows_of(comparison)
    classes = ["baseline" if r["method"] == "baseline" else "" for r in rows]
    tests = []
    for heading, lines in delta_blocks(comparison):
        items = "".join(f'<li{" class=sig" if significant else ""}>{_e(line)}</li>' for line, significant in lines)
        tests.append(f"<h3>{_e(heading)}</h3><ul>{items}</ul>")
    splits, dropped = data_tables(data)
    chart_html = "".join(f"<h3>{_e(model)}</h3>" + "".join(_img(name, charts[name]) for name in (
        f"quality_{model}.png", f"tradeoff_{model}.png", f"cost_{model}.png", f"timeseries_{model}.png")
        if name in charts) for model in runs)
    definitions = "".join(f"<dt><strong>{_e(t)}</strong></dt><dd>{_e(d)}</dd>" for t, d in DEFINITIONS)
    body = f"""
<h1>ftbench: LoRA vs QLoRA vs top-layer tuning</h1>
<p class="note">Test split, n = {_e(_n_text(comparison))} questions per run. Quality on a 0–1 scale as
value [95 % CI] (mean ± sd across seeds when there are several).</p>
<nav><a href="#results">results</a><a href="#tests">paired tests</a><a href="#charts">charts</a>
<a href="#study">reference study</a><a href="#data">data</a><a href="#answers">answers</a>
<a href="#definitions">definitions</a></nav>
<section id="results"><h2>Results</h2>
<p class="note">Power and memory are those of training; the baseline is not trained (–), its inference
cost is in the cost table.</p>
{_html_table(MAIN_HEADER, main_table(comparison), row_classes=classes)}
<h3>Cost</h3>
{_html_table(COST_HEADER, cost_table(comparison), row_classes=classes)}
</section>
<section id="tests"><h2>Paired tests</h2>
<p class="note">Same test questions for every run; Δ = method − reference, paired bootstrap 95 % CI, two-sided p
from an approximate randomisation test ({n_resamples} resamples). A method is called better or worse only when
p &lt; {ALPHA}; otherwise: no significant difference.</p>
{"".join(tests)}
</section>
<section id="charts"><h2>Charts</h2>{chart_html}</section>
<section id="study"><h2>Reference study</h2>
<p>Published figures, {_e(STUDY_LABEL)}. Not comparable number for number with the tables above.</p>
{_html_table(STUDY_COLUMNS, study_table())}
</section>
<section id="data"><h2>Data</h2>
{_html_table(DATA_HEADER, splits, left=1)}
{_html_table(("dropped because", "records"), dropped, left=1) if dropped else "<p>No records dropped.</p>"}
</section>
<section id="answers"><h2>Answers side by side</h2>
<p class="note">Each run's answer to the same test question, with its per-example F1.</p>
{"".join(_browser(model, by_method) for model, by_method in runs.items())}
</section>
<section id="definitions"><h2>Definitions</h2><dl>{definitions}</dl></section>
"""
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>ftbench report</title><style>{_CSS}</style></head><body>{body}"
            f"<script>{_JS}</script></body></html>\n")


def write_html(comparison: dict, runs: Runs, data: dict, charts: dict[str, bytes], *, n_resamples: int) -> None:
    write_text(HTML_REPORT, render_html(comparison, runs, data, charts, n_resamples=n_resamples))


def build(params: Params) -> dict[str, Any]:
    """The whole resource_report stage, in the current directory: read every run that ``params.run``
    lists, compare, and write metrics/comparison.*, plots/ and reports/index.html. Returns the comparison."""
    runs = load_runs(params)
    data = load_data_summary()
    n_resamples = params.eval.bootstrap_resamples
    comparison = compare(runs, n_resamples=n_resamples, seed=params.seed)
    charts = build_charts(runs, comparison)
    write_plots(comparison, charts)
    write_tables(comparison, data, n_resamples=n_resamples)
    write_html(comparison, runs, data, charts, n_resamples=n_resamples)
    return comparison
