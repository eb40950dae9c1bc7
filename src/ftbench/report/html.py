"""reports/index.html: one self-contained page rendered from a Jinja2 template with autoescaping on.

Model answers and questions are untrusted text (a model can answer ``<script>``); the template escapes
every value, so no string is escaped, or forgotten, by hand. Charts are embedded as data: URIs and the
CSS/JS are inlined from files next to the template, so the page opens offline as one file.
"""

from __future__ import annotations

import base64

from jinja2 import Environment, PackageLoader, StrictUndefined

from ftbench.human import html_section_context
from ftbench.metrics import normalize_answer
from ftbench.report.compare import ALPHA, models_of, rows_of
from ftbench.report.runs import Run, Runs
from ftbench.report.tables import (
    DATA_HEADER,
    MAIN_HEADER,
    SIG_MARK,
    cost_header,
    cost_table,
    data_tables,
    definitions,
    delta_table,
    f1_claims,
    fmt,
    how_to_read,
    main_table,
    n_text,
    regime_table,
    study,
    study_table,
    verdicts,
)

_ENV = Environment(loader=PackageLoader("ftbench.report", "templates"), autoescape=True, undefined=StrictUndefined,
                   trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)


def _f1_class(f1: float | None) -> str:
    if f1 is None:
        return ""
    return "good" if f1 >= 0.999 else ("part" if f1 > 0 else "bad")


def _browser(model: str, by_method: dict[str, list[Run]]) -> dict:
    """Per test question: context, reference, and every run's answer with its F1 (filtered in the page's JS)."""
    runs = [r for rs in by_method.values() for r in rs]
    label = {id(r): (r.method if r.method == "baseline" or len(by_method[r.method]) == 1 else r.run_id) for r in runs}
    base = by_method["baseline"][0].predictions
    questions = []
    for i, ex in enumerate(base):
        answers = [{"run": label[id(r)], "answer": r.predictions[i]["answer"], "f1": fmt(r.predictions[i].get("f1"), 2),
                    "cls": _f1_class(r.predictions[i].get("f1"))} for r in runs]
        # "methods disagree": the tuned runs' answers differ (the baseline joins only if one run is tuned)
        tuned = [a["answer"] for r, a in zip(runs, answers, strict=True) if r.method != "baseline"]
        compared = tuned if len(tuned) > 1 else [a["answer"] for a in answers]
        questions.append({"id": ex.get("id", i), "event": ex.get("event_type") or "", "role": ex.get("role"),
                          "disagree": int(len({normalize_answer(a) for a in compared}) > 1),
                          "question": ex.get("question", ""), "context": ex.get("context", ""),
                          "reference": ex.get("reference", ""), "answers": answers})
    events = sorted({p.get("event_type") or "" for p in base} - {""})
    return {"model": model, "events": events, "questions": questions}


def render_html(comparison: dict, runs: Runs, data: dict, trains: dict[str, dict[str, list[dict]]],
                charts: dict[str, bytes], *, n_resamples: int, human: dict | None = None) -> str:
    """The self-contained report: verdict, method note, tables, charts, the study's figures and the answers."""
    models = models_of(comparison)
    regimes = {model: regime_table(trains[model]) for model in models}
    splits, dropped = data_tables(data)
    ref = study()
    study_header, study_rows = study_table(ref)
    deltas = []
    for model in models:
        header, rows = delta_table(comparison, model)
        deltas.append({"model": model, "header": header, "rows": rows, "claims": f1_claims(comparison, model)})
    return _ENV.get_template("report.html.j2").render(
        models=models, n_text=n_text(comparison), alpha=ALPHA, mark=SIG_MARK,
        verdicts=verdicts(comparison),
        notes=how_to_read(comparison, {m: r[2] for m, r in regimes.items()}, n_resamples=n_resamples),
        main_header=MAIN_HEADER, main_rows=main_table(comparison),
        row_classes=["baseline" if r["method"] == "baseline" else "" for r in rows_of(comparison)],
        cost_header=cost_header(comparison), cost_rows=cost_table(comparison), deltas=deltas,
        regimes=[{"model": m, "header": h, "rows": rows} for m, (h, rows, _) in regimes.items()],
        charts={name: base64.b64encode(png).decode("ascii") for name, png in charts.items()},
        study_label=ref["label"], study_header=study_header, study_rows=study_rows,
        data_header=DATA_HEADER, data_rows=splits, dropped=dropped,
        browsers=[_browser(model, by_method) for model, by_method in runs.items()],
        definitions=definitions(comparison["family"]["size"]), human=html_section_context(human),
    )
