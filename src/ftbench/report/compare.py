"""Statistics glue: one row per (model, method), every paired test, one family-wise correction.

* **The document is the unit.** Every CI and paired test resamples test documents (``doc_id``), since
  questions built from one document share its wording and difficulty; resampling questions would make the
  intervals too narrow and the p-values too small.
* **Seeds.** A method row gives the mean across seeds with the sample sd (``f1_sd``); its CI and its paired
  tests get every seed's per-example scores (``ftbench.metrics`` resamples seeds as well as documents), so
  seed variance widens them. With one seed there is no seed variance in any interval.
* **One family per report.** All paired tests of the report (every metric × every pair of runs, the baseline
  included, every model) are one family, corrected with Holm–Bonferroni; ``significant`` and every word of
  the report follow the adjusted p. The adjusted interval is the Bonferroni one (Δ ± z·se at level
  1 − α/m), simultaneous over the family.
* **Honest cost columns.** Training cost exists for tuned rows only; nothing is estimated: a null input is
  a null output.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from statistics import NormalDist
from typing import Any

import numpy as np

from ftbench.metrics import (
    CI_METRICS,
    bootstrap_ci,
    bootstrap_ci_seeds,
    holm,
    minimum_detectable_effect,
    paired_test,
)
from ftbench.report.frontier import fronts
from ftbench.report.runs import Run, Runs, clusters, references, seed_answers, seed_rows

QUALITY: tuple[str, ...] = CI_METRICS
#: Column order of the tables: the study's (F1, BLEU, BERTScore, R-1/2/L) with EM after F1.
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
    "examples_per_s", "latency_mean_s", "latency_p50_s", "latency_p95_s", "latency_examples",
)
#: What a paired test keeps from ``ftbench.metrics.paired_test``; :func:`adjust` adds ``significant`` (from the
#: adjusted p) and ``mde`` (at the family's level) in place of the unadjusted ones.
TEST_FIELDS: tuple[str, ...] = ("delta", "ci_low", "ci_high", "p_value", "se", "n", "n_clusters")
ALPHA = 0.05
#: ``memory_kind`` of a row -> how tables and charts label it.
MEMORY_KINDS: dict[str, str] = {"gpu_allocated": "GPU", "cpu_rss": "RSS"}
#: Keys of comparison.json that are not models.
RESERVED: tuple[str, ...] = ("pairwise", "family", "frontier")


def _mean(values: Sequence[float | None]) -> float | None:
    if not values or any(v is None for v in values):
        return None
    return float(np.mean(values))


def _sd(values: Sequence[float | None]) -> float | None:
    if len(values) < 2 or any(v is None for v in values):
        return None
    return float(np.std(values, ddof=1))


def _scored(runs: Sequence[Run], metric: str) -> bool:
    """Whether every run has this metric (BERTScore is optional; BLEU has no per-example score)."""
    if any(r.eval.get(metric) is None for r in runs):
        return False
    return metric == "bleu" or all(p.get(metric) is not None for r in runs for p in r.predictions)


def _ci(runs: Sequence[Run], metric: str, docs: list[str], refs: list[str], n_resamples: int,
        seed: int) -> tuple[float | None, float | None]:
    if not _scored(runs, metric):
        return None, None
    if len(runs) == 1:
        return bootstrap_ci(runs[0].predictions, metric, clusters=docs, n_resamples=n_resamples, seed=seed,
                            alpha=ALPHA, predictions=runs[0].answers, references=refs)
    return bootstrap_ci_seeds([r.predictions for r in runs], metric, clusters=docs, n_resamples=n_resamples,
                              seed=seed, alpha=ALPHA, predictions_per_seed=[r.answers for r in runs],
                              references=refs)


def paired_tests(a: Sequence[Run], b: Sequence[Run], docs: list[str], refs: list[str], *, n_resamples: int,
                 seed: int) -> dict[str, dict]:
    """``{metric: test}`` for b − a on the same questions, resampling documents (and seeds, if several).

    The tests are not adjusted yet: :func:`adjust` does it once the whole family is known.
    """
    out: dict[str, dict] = {}
    for metric in QUALITY:
        if not (_scored(a, metric) and _scored(b, metric)):
            continue
        test = paired_test(seed_rows(a), seed_rows(b), metric, clusters=docs, n_resamples=n_resamples, seed=seed,
                           alpha=ALPHA, predictions_a=seed_answers(a), predictions_b=seed_answers(b),
                           references=refs)
        out[metric] = {k: test[k] for k in TEST_FIELDS}
    return out


def adjust(tests: list[dict], *, n_resamples: int, alpha: float = ALPHA) -> dict[str, Any]:
    """Holm–Bonferroni over ``tests`` (in place): ``p_adjusted``, ``significant``, the adjusted CI and the mde.

    The adjusted CI and the mde use the Bonferroni level α/m (Holm's strictest step), so both hold for the
    family whatever a comparison's rank. Returns what comparison.json keeps under ``"family"``, with the
    smallest adjusted p the randomisation tests can reach (m/(R + 1)): at or above α nothing can be called
    significant, however large a difference, until ``eval.bootstrap_resamples`` grows.
    """
    size = len(tests)
    level = alpha / max(size, 1)
    z = NormalDist().inv_cdf(1 - level / 2)
    for test, p_adj in zip(tests, holm([t["p_value"] for t in tests]), strict=True):
        test["p_adjusted"] = float(p_adj)
        test["significant"] = bool(p_adj < alpha)
        test["ci_low_adjusted"] = test["delta"] - z * test["se"]
        test["ci_high_adjusted"] = test["delta"] + z * test["se"]
        test["mde"] = minimum_detectable_effect(test["se"], level)
    return {"size": size, "correction": "holm", "alpha": alpha, "bonferroni_level": level,
            "min_p_adjusted": min(1.0, size / (n_resamples + 1))}


def _peak_memory(stats: dict | None) -> tuple[float | None, str | None]:
    """GPU allocated peak when the run used a GPU, else peak RSS, with the kind it is."""
    if not stats:
        return None, None
    if stats.get("gpu_peak_memory_allocated_mb") is not None:
        return stats["gpu_peak_memory_allocated_mb"], "gpu_allocated"
    if stats.get("peak_rss_mb") is not None:
        return stats["peak_rss_mb"], "cpu_rss"
    return None, None


def _row(model: str, method: str, runs: Sequence[Run], docs: list[str], refs: list[str], n_resamples: int,
         seed: int) -> dict[str, Any]:
    tuned = method != "baseline"
    row: dict[str, Any] = {
        "run": f"{model}/{method}", "model": model, "method": method,
        "seeds": ",".join(str(r.seed) for r in runs) if tuned else None,
        "n": runs[0].eval.get("n"), "n_clusters": len(set(docs)),
        "device": runs[0].train.get("device") if tuned else None,
    }
    values: dict[str, list] = {}
    for metric in QUALITY:
        values[metric] = [r.eval.get(metric) for r in runs]
        row[metric] = _mean(values[metric])
        row[f"{metric}_ci_low"], row[f"{metric}_ci_high"] = _ci(runs, metric, docs, refs, n_resamples, seed)
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

    ``{model: {method: row}}`` with ``row["vs_baseline"]`` for tuned methods; ``"pairwise"``:
    ``{model: {"<b>_vs_<a>": tests}}`` for every pair of methods (delta = b − a); ``"family"``: the
    correction over all those tests; ``"frontier"``: per model and cost axis, the front and who dominates whom.
    """
    out: dict[str, Any] = {}
    pairwise: dict[str, dict] = {}
    for model, by_method in runs.items():
        base, docs, refs = by_method["baseline"], clusters(by_method), references(by_method)
        rows: dict[str, dict] = {}
        for method, method_runs in by_method.items():
            rows[method] = _row(model, method, method_runs, docs, refs, n_resamples, seed)
            if method != "baseline":
                rows[method]["vs_baseline"] = paired_tests(base, method_runs, docs, refs, n_resamples=n_resamples,
                                                           seed=seed)
        out[model] = rows
        methods = [m for m in by_method if m != "baseline"]
        pairwise[model] = {
            f"{b}_vs_{a}": paired_tests(by_method[a], by_method[b], docs, refs, n_resamples=n_resamples, seed=seed)
            for a, b in itertools.combinations(methods, 2)
        }
    out["pairwise"] = pairwise
    out["family"] = adjust([t for _, _, _, tests in comparisons(out) for t in tests.values()],
                           n_resamples=n_resamples)
    out["frontier"] = {model: fronts(out[model], pairwise[model]) for model in runs}
    return out


def models_of(comparison: dict[str, Any]) -> list[str]:
    return [k for k in comparison if k not in RESERVED]


def rows_of(comparison: dict[str, Any]) -> list[dict[str, Any]]:
    """All (model, method) rows in report order: per model, the baseline first, then params order."""
    return [row for model in models_of(comparison) for row in comparison[model].values()]


def comparisons(comparison: dict[str, Any], model: str | None = None) -> list[tuple[str, str, str, dict]]:
    """``(model, a, b, {metric: test of b − a})``: each method vs the baseline, then every pair of methods."""
    out = []
    for name in models_of(comparison) if model is None else [model]:
        rows = comparison[name]
        out += [(name, "baseline", m, row["vs_baseline"]) for m, row in rows.items() if "vs_baseline" in row]
        for key, tests in comparison.get("pairwise", {}).get(name, {}).items():
            b, _, a = key.partition("_vs_")
            out.append((name, a, b, tests))
    return out
