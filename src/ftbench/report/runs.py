"""Loading: every run's eval.json, train.json, time series and predictions, checked for comparability.

The report never recomputes a model output; it reads what the baseline / train / evaluate stages wrote.
Every run of a model must hold the same test questions in the same order and every question its document
(``doc_id``), or the paired, document-clustered statistics would pair or group unrelated questions.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from ftbench.io import FtbenchError, read_json_file, read_jsonl
from ftbench.params import Params
from ftbench.stage import predictions_path, run_metrics_dir, run_name

DATA_JSON = Path("metrics/data.json")
RERUN = "run dvc repro (the stage that writes it has not run, or was interrupted)"


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
    missing = next((i for i, row in enumerate(rows) if not row.get("doc_id")), None)
    if missing is not None:
        raise FtbenchError(f"{path}: line {missing + 1} has no doc_id (the document-level statistics need it)",
                           fix="rerun the evaluate stages with this version (dvc repro)")
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
    """Read every run that params.run lists (stale run directories are ignored), all on the same questions."""
    runs: Runs = {}
    for model in params.run.models:
        base = _load_run(model, "baseline", None)
        by_method: dict[str, list[Run]] = {"baseline": [base]}
        keys = [(p["id"], p["doc_id"]) for p in base.predictions]
        for method in params.run.methods:
            by_method[method] = [_load_run(model, method, seed) for seed in params.run.seeds]
            for run in by_method[method]:
                if [(p["id"], p["doc_id"]) for p in run.predictions] != keys:
                    raise FtbenchError(
                        f"{predictions_path(model, run.run_id)}: test examples differ from "
                        f"{predictions_path(model, 'baseline')}",
                        fix="run dvc repro so that every run is evaluated on the same test split")
        runs[model] = by_method
    return runs


def references(by_method: dict[str, list[Run]]) -> list[str]:
    return [p["reference"] for p in by_method["baseline"][0].predictions]


def clusters(by_method: dict[str, list[Run]]) -> list[str]:
    """The resampling unit of every CI and paired test: each test question's document."""
    return [p["doc_id"] for p in by_method["baseline"][0].predictions]


def seed_rows(runs: Sequence[Run]) -> list[dict] | list[list[dict]]:
    """One run's per-example rows, or every seed's (the statistics then resample seeds too)."""
    return runs[0].predictions if len(runs) == 1 else [r.predictions for r in runs]


def seed_answers(runs: Sequence[Run]) -> list[str] | list[list[str]]:
    """The answers in the same shape as :func:`seed_rows` (corpus BLEU is recomputed from them)."""
    return runs[0].answers if len(runs) == 1 else [r.answers for r in runs]


def load_data_summary(path: Path = DATA_JSON) -> dict:
    return _read_json(path)
