"""Text of the report: table cells, the wording rule, metrics/comparison.md and the CSV files.

Every table is built once as rows of strings and rendered twice (markdown here, HTML in
:mod:`ftbench.report.html`), so the two reports cannot disagree. A null input is "–" in a table and an
empty cell in a CSV: nothing is estimated. Published figures (the reference study's table, the metric
definitions) are data files next to this module, not code.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from importlib import resources
from string import Template
from typing import Any

import yaml

from ftbench.human import markdown_section
from ftbench.metrics import BLEU_SIGNATURE, DISPLAY_NAMES, MDE_POWER
from ftbench.report.compare import (
    ALPHA,
    INFERENCE_FIELDS,
    MEMORY_KINDS,
    QUALITY,
    TABLE_QUALITY,
    TRAIN_FIELDS,
    comparisons,
    models_of,
    rows_of,
)
from ftbench.report.frontier import COST_TOLERANCE, verdict_sentence

MINUS = "\u2212"
#: Fewer timed examples than this and the p95 latency is (close to) the slowest one: labelled so.
MIN_LATENCY_EXAMPLES = 20
#: Marks a Δ whose Holm-adjusted p < α.
SIG_MARK = "*"

QUALITY_CSV_COLUMNS = ("run", "model", "method", *QUALITY)
COST_CSV_COLUMNS = ("run", "model", "method", "train_seconds", "tokens_per_s", "peak_memory_mb", "energy_wh",
                    "artifact_size_mb", "trainable_percent", "examples_per_s", "latency_p50_s")


def _data_file(name: str) -> str:
    return resources.files("ftbench.report").joinpath(name).read_text(encoding="utf-8")


# ------------------------------------------------------------------------------------------ cells


def fmt(value: float | None, digits: int = 3) -> str:
    """A number for tables; "–" for a null (never invented)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def fmt_pct(value: float | None) -> str:
    """Trainable % to 4 significant digits, as the study prints it (0.069, 4.92, 31.1)."""
    return "–" if value is None else f"{value:.4g}"


def signed(value: float, digits: int = 3) -> str:
    """``+0.031`` / ``−0.074`` (Unicode minus), never ``−0.000``."""
    text = f"{abs(value):.{digits}f}"
    return ("+" if value >= 0 or float(text) == 0 else MINUS) + text


def fmt_p(p: float) -> str:
    """``adjusted p = 0.031`` to two significant digits, ``adjusted p < 0.001`` below that."""
    return "adjusted p < 0.001" if p < 0.001 else f"adjusted p = {float(f'{p:.2g}'):g}"


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


def delta_cell(test: dict) -> tuple[str, bool]:
    """``+0.621 [+0.55, +0.69]`` with the adjusted CI, and whether the adjusted p is significant; a
    difference that is not gets its mde, so "n.s." can be told apart from "too few questions"."""
    text = f"{signed(test['delta'])} [{signed(test['ci_low_adjusted'], 2)}, {signed(test['ci_high_adjusted'], 2)}]"
    if not test["significant"]:
        text += " n.s., identical" if test["se"] == 0 else f" n.s., mde {test['mde']:.2f}"
    return text, test["significant"]


def claim(a: str, b: str, metric: str, test: dict) -> str:
    """The wording rule: "better"/"worse" only when the Holm-adjusted p < α; otherwise "no significant
    difference" with the smallest difference the test split could have detected."""
    name = DISPLAY_NAMES.get(metric, metric)
    stats = f"Δ = {signed(test['delta'])}, {fmt_p(test['p_adjusted'])}"
    if test["significant"]:
        return f"{b} is {'better' if test['delta'] > 0 else 'worse'} than {a} on {name} ({stats})"
    if test["se"] == 0:
        return f"no difference in {name} between {b} and {a}: the same score on every test question"
    return (f"no significant difference in {name} between {b} and {a} ({stats}; with the spread observed, "
            f"the test detects |Δ| ≥ {test['mde']:.3f} with {MDE_POWER:.0%} power)")


def _gb(mb: float | None) -> float | None:
    return None if mb is None else mb / 1024.0


def _memory_label(row: dict, key: str = "memory_kind") -> str:
    kind = MEMORY_KINDS.get(row.get(key) or "")
    return f" ({kind})" if kind else ""


# ------------------------------------------------------------------------------------------ tables

MAIN_HEADER = ("model", "method", "trainable %", "F1", "EM", "BLEU", "BERTScore", "R-1", "R-2", "R-L",
               "power W (peak)", "memory GB")


def main_table(comparison: dict) -> list[list[str]]:
    """The study's columns plus EM: quality with CIs; power and memory of training (– for the baseline)."""
    return [[row["model"], row["method"], fmt_pct(row["trainable_percent"]),
             *(quality_cell(row, m) for m in TABLE_QUALITY),
             fmt(row["gpu_power_peak_w"], 1), fmt(_gb(row["peak_memory_mb"]), 2) + _memory_label(row)]
            for row in rows_of(comparison)]


def cost_header(comparison: dict) -> tuple[str, ...]:
    timed = [r["latency_examples"] for r in rows_of(comparison) if r.get("latency_examples") is not None]
    p95 = "latency p95 s" if timed and min(timed) >= MIN_LATENCY_EXAMPLES else "latency p95 (≈ max) s"
    return ("model", "method", "train s", "tokens/s", "MFU", "power W mean", "energy Wh", "artifact MB",
            "base model MB", "examples/s", "latency p50 s", p95, "timed", "inference memory GB")


def cost_table(comparison: dict) -> list[list[str]]:
    return [[row["model"], row["method"], fmt(row["train_seconds"], 1), fmt(row["tokens_per_s"], 1),
             fmt(row["mfu"], 4), fmt(row["gpu_power_mean_w"], 1), fmt(row["energy_wh"], 3),
             fmt(row["artifact_size_mb"], 2), fmt(row["base_model_size_mb"], 1), fmt(row["examples_per_s"], 2),
             fmt(row["latency_p50_s"], 3), fmt(row["latency_p95_s"], 3), fmt(row["latency_examples"], 0),
             fmt(_gb(row["inference_peak_memory_mb"]), 2) + _memory_label(row, "inference_memory_kind")]
            for row in rows_of(comparison)]


def delta_table(comparison: dict, model: str) -> tuple[list[str], list[list[tuple[str, bool]]]]:
    """One model's paired comparisons: rows "b − a", columns metrics, cells (text, significant)."""
    pairs = comparisons(comparison, model)
    metrics = [m for m in TABLE_QUALITY if any(m in tests for *_, tests in pairs)]
    header = ["comparison", *(DISPLAY_NAMES[m] for m in metrics)]
    rows = [[(f"{b} {MINUS} {a}", False), *(delta_cell(tests[m]) if m in tests else ("–", False) for m in metrics)]
            for _, a, b, tests in pairs]
    return header, rows


def f1_claims(comparison: dict, model: str) -> list[str]:
    """The headline metric's comparisons in words (the table holds every metric)."""
    return [claim(a, b, "f1", tests["f1"]) for _, a, b, tests in comparisons(comparison, model) if "f1" in tests]


#: Training-regime fields of train.json, each with the names it may be recorded under (first found wins).
REGIME_FIELDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("device", ("device",)),
    ("training data sha256", ("train_data_sha256", "data_sha256")),
    ("group by length", ("group_by_length",)),
    ("trainable dtype", ("trainable_dtype",)),
    ("gradient checkpointing", ("gradient_checkpointing",)),
    ("max grad norm", ("max_grad_norm",)),
    ("learning rate", ("lr",)),
    ("epochs", ("epochs",)),
    ("optimizer steps", ("steps",)),
    ("samples", ("samples",)),
    ("training tokens", ("train_tokens",)),
)
NOT_RECORDED = "not recorded"


def _regime_value(train: dict, keys: tuple[str, ...]) -> str:
    key = next((k for k in keys if k in train), None)
    if key is None:
        return NOT_RECORDED
    value = train[key]
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    text = str(value)
    return text[:12] if key.endswith("sha256") else text


def regime_table(trains: dict[str, list[dict]]) -> tuple[list[str], list[list[str]], list[str]]:
    """What each tuned method trained under, from its train.json files (one per seed).

    Returns (header, rows, flagged fields): a row per field some run recorded, a column per method (seeds
    that disagree are shown "a / b") and a last column that flags a field whose value differs between
    any two runs, since then a cost or quality difference mixes the method with the regime.
    """
    header = ["field", *trains, "same for all"]
    rows, flagged = [], []
    for label, keys in REGIME_FIELDS:
        values = {m: [_regime_value(t, keys) for t in ts] for m, ts in trains.items()}
        seen = {v for vs in values.values() for v in vs}
        if seen == {NOT_RECORDED}:
            continue
        differs = len(seen) > 1
        if differs:
            flagged.append(label)
        rows.append([label, *(" / ".join(dict.fromkeys(vs)) for vs in values.values()),
                     "DIFFERS" if differs else "yes"])
    return header, rows, flagged


def study() -> dict[str, Any]:
    """The reference study's published table (BRIEF.md §1), read from study.json."""
    return json.loads(_data_file("study.json"))


def study_table(data: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    keys = [k for k, _ in data["columns"]]
    digits = {"trainable_percent": None, "power_w": 2, "memory_gb": 2}
    rows = []
    for values in data["rows"]:
        row = dict(zip(keys, values, strict=True))
        rows.append([fmt_pct(v) if k == "trainable_percent" else
                     (v if isinstance(v, str) else fmt(v, digits.get(k, 4))) for k, v in row.items()])
    return [h for _, h in data["columns"]], rows


def definitions(family_size: int) -> list[tuple[str, str]]:
    """(term, text) from definitions.yaml, with the report's own figures filled in."""
    values = {"alpha": ALPHA, "bleu": BLEU_SIGNATURE, "family": family_size, "tolerance": COST_TOLERANCE}
    return [(d["term"], Template(d["text"]).substitute(values)) for d in yaml.safe_load(_data_file("definitions.yaml"))]


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


# ------------------------------------------------------------------------------------------ notes


def n_text(comparison: dict) -> str:
    """``128 questions from 54 documents`` (every run of a model is evaluated on the same questions)."""
    pairs = sorted({(r["n"], r["n_clusters"]) for r in rows_of(comparison) if r.get("n") is not None})
    return "; ".join(f"{n} questions from {k} documents" for n, k in pairs) or "–"


def verdicts(comparison: dict) -> list[str]:
    return [verdict_sentence(model, comparison["frontier"][model]) for model in models_of(comparison)]


def how_to_read(comparison: dict, flagged: dict[str, list[str]], *, n_resamples: int) -> list[str]:
    """The method note: what is controlled, what one seed means, the unit of resampling, the family."""
    family = comparison["family"]
    seeds = sorted({len(r["seeds"].split(",")) for r in rows_of(comparison) if r.get("seeds")})
    differing = "; ".join(f"{model}: {', '.join(fields)}" for model, fields in flagged.items() if fields)
    notes = [
        "What is controlled: the methods of a model should differ only in what the method changes: the same "
        "data in the same order (data hash, seed, length grouping), prompt, precision of trainable weights, "
        "gradient checkpointing, clipping and budget (epochs, steps). The training-regime table shows what each "
        "train.json recorded; "
        + (f"these fields DIFFER, so differences between those methods mix the method with the regime: {differing}."
           if differing else "no recorded field differs between methods."),
        f"Unit of resampling: the test document ({n_text(comparison)}); questions of one document are "
        f"correlated, so every CI and paired test resamples documents ({n_resamples} bootstrap resamples; "
        "p from a document-level randomisation test).",
        ("One training seed per method: the intervals hold the sampling of test documents only, not the "
         "variation from retraining with another seed." if seeds == [1] or not seeds else
         f"{'/'.join(map(str, seeds))} training seeds per method: mean ± sd across seeds; documents and seeds "
         "are both resampled, so the intervals and tests hold seed variance."),
        f"Family: all {family['size']} paired tests of this report (every metric × every pair of runs, the "
        f"baseline included) are corrected together with Holm–Bonferroni. A Δ is marked {SIG_MARK} and worded "
        f"better/worse only when its adjusted p < {ALPHA}; its interval is the Bonferroni one (level "
        f"{family['bonferroni_level']:.2g}), and \"n.s., mde\" gives the smallest difference the test could have "
        f"detected ({MDE_POWER:.0%} power at that level), estimated from the spread of the observed paired "
        "differences (a rough power statement: two runs that agree on almost every question get a small mde).",
        f"Front: among tuned methods, on training time and on peak memory separately; B dominates A when B "
        f"costs no more (within {COST_TOLERANCE:.0%}) and its F1 is significantly higher, or when the F1 "
        f"difference is not significant, B is cheaper by more than {COST_TOLERANCE:.0%} and B's F1 is not lower. "
        "\"Not significant\" is not \"equal\": a dearer method with a higher but not significantly higher F1 "
        "stays on the front.",
    ]
    if family["min_p_adjusted"] >= ALPHA:
        notes.append(
            f"WARNING: with {n_resamples} resamples the smallest attainable adjusted p is "
            f"{family['min_p_adjusted']:.2g} ≥ {ALPHA}: no comparison can be significant, however large. "
            f"Raise eval.bootstrap_resamples to at least {math.ceil(family['size'] / ALPHA)}.")
    return notes


# ------------------------------------------------------------------------------------------ markdown


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _md_delta_rows(rows: list[list[tuple[str, bool]]]) -> list[list[str]]:
    return [[text + (f" \\{SIG_MARK}" if sig else "") for text, sig in row] for row in rows]


def render_markdown(comparison: dict, data: dict, trains: dict[str, dict[str, list[dict]]], *,
                    n_resamples: int, human: dict | None = None) -> str:
    """metrics/comparison.md: the verdict first, then how to read it, the tables, the data and definitions."""
    regimes = {model: regime_table(trains[model]) for model in models_of(comparison)}
    out = ["# Fine-tuning comparison", "", "## Verdict: quality vs cost", "",
           *(f"- {sentence}" for sentence in verdicts(comparison)), "",
           "Charts: `plots/images/frontier_<model>.png` (F1 with 95 % CI against training time and peak memory, "
           "the front drawn).", "",
           "## How to read this", "", *(f"- {note}" for note in how_to_read(
               comparison, {m: r[2] for m, r in regimes.items()}, n_resamples=n_resamples)), "",
           "## Results", "",
           f"Test split, {n_text(comparison)}. Quality on a 0–1 scale as `value [95 % CI]` (mean ± sd across "
           "seeds when there are several). Power and memory are those of training; the baseline is not trained "
           "(its inference cost is in the cost table).", "",
           md_table(MAIN_HEADER, main_table(comparison)), "",
           "## Paired comparisons", "",
           f"Δ = b − a on the same test questions with its family-wide (Bonferroni) interval; `{SIG_MARK}`: adjusted "
           f"p < {ALPHA}; `n.s., mde x`: no significant difference, and the test could only have detected "
           "|Δ| ≥ x (80 % power, from the observed spread).", ""]
    for model in models_of(comparison):
        header, rows = delta_table(comparison, model)
        out += [f"### {model}", "", md_table(header, _md_delta_rows(rows)), "", "F1 in words:", "",
                *(f"- {line}" for line in f1_claims(comparison, model)), ""]
    out += ["## Cost", "", md_table(cost_header(comparison), cost_table(comparison)), ""]
    out += ["## Training regime", ""]
    for model, (header, rows, _) in regimes.items():
        out += [f"### {model}", "", md_table(header, rows), ""]
    out += [markdown_section(human)]
    splits, dropped = data_tables(data)
    out += ["## Data", "", md_table(DATA_HEADER, splits), ""]
    type_header, type_rows = event_type_table(data)
    if type_rows:
        out += ["QA pairs used, per event type and per role:", "", md_table(type_header, type_rows), ""]
    out += [md_table(("dropped because", "records"), dropped) if dropped else "No records dropped.", ""]
    ref = study()
    out += ["## Reference study", "", f"Its published figures, {ref['label']}:", "", md_table(*study_table(ref)), ""]
    out += ["## Definitions", "",
            *(f"- **{term}**: {text}" for term, text in definitions(comparison["family"]["size"])), ""]
    return "\n".join(out)


# ------------------------------------------------------------------------------------------ CSV


def csv_text(columns: Sequence[str], rows: Sequence[dict]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else row[c] for c in columns])
    return buf.getvalue()


def comparison_csv_columns() -> list[str]:
    """Every field of a comparison row (as ``compare._row`` builds it), flattened as :func:`flat` does."""
    cols = ["model", "method", "run", "seeds", "n", "n_clusters", "device"]
    for m in QUALITY:
        cols += [m, f"{m}_ci_low", f"{m}_ci_high", f"{m}_sd"]
    cols += [*TRAIN_FIELDS, "train_seconds_sd", "peak_memory_mb", "memory_kind", "energy_source",
             "peak_flops_source", *INFERENCE_FIELDS, "inference_peak_memory_mb", "inference_memory_kind",
             "inference_gpu_power_mean_w", "inference_gpu_power_peak_w", "inference_energy_wh"]
    for m in QUALITY:
        cols += [f"{m}_delta_vs_baseline", f"{m}_p_vs_baseline", f"{m}_p_adjusted_vs_baseline"]
    return cols


def flat(row: dict) -> dict:
    out = {k: v for k, v in row.items() if k != "vs_baseline"}
    for m, t in (row.get("vs_baseline") or {}).items():
        out[f"{m}_delta_vs_baseline"], out[f"{m}_p_vs_baseline"] = t["delta"], t["p_value"]
        out[f"{m}_p_adjusted_vs_baseline"] = t["p_adjusted"]
    return out
