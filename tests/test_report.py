"""Tests for the resource_report stage on synthetic run outputs (no model is loaded).

One model, the baseline and three methods on 40 test questions from 20 documents (two questions each):
the baseline is wrong everywhere, LoRA right everywhere, QLoRA answers exactly like LoRA, and top-layer
tuning is right on half (seed 42; another seed is also right on every fourth question, so that results
differ across seeds). 2000 resamples keep the smallest attainable Holm-adjusted p (42 tests) below 0.05.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ftbench.io import FtbenchError, read_jsonl
from ftbench.metrics import (
    DISPLAY_NAMES,
    bleu_corpus,
    bootstrap_ci_seeds,
    exact_match,
    rouge_per_example,
    token_f1,
)
from ftbench.params import load_params
from ftbench.report import compare, frontier, tables
from ftbench.report.build import build
from ftbench.report.runs import load_runs

REPO = Path(__file__).resolve().parents[1]
MODEL = "tiny"
METHODS = ("lora", "qlora", "top_layer")
N = 40
EVENTS = ("Deploy", "Exhibit", "Experiment")
SCRIPT = "<script>alert('x')</script>"
RESAMPLES = 2000
REGIME = {"trainable_dtype": "float32", "gradient_checkpointing": False, "max_grad_norm": 1.0,
          "group_by_length": True, "train_data_sha256": "0123456789abcdef0123"}


def _example(i: int) -> dict:
    return {"id": f"q{i}", "doc_id": f"d{i // 2}", "event_type": EVENTS[i % 3], "role": "Subject",
            "question": f"Who took part in event {i}?",
            "context": f"On day {i} the {i}th brigade & its partners deployed near the coast.",
            "reference": f"the {i}th brigade of the navy"}


def _answers(run: str) -> list[str]:
    refs = [_example(i)["reference"] for i in range(N)]
    if run == "baseline":
        return ["nothing is known" for _ in refs]
    if run.startswith(("lora", "qlora")):
        return refs
    # top layer: right on the even questions (seed 42), and on i % 4 == 3 too with any other seed;
    # one wrong answer carries markup that must be escaped
    other_seed = not run.endswith("-s42")
    return [r if i % 2 == 0 or (other_seed and i % 4 == 3) else (SCRIPT if i == 1 else "a coastal city")
            for i, r in enumerate(refs)]


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _eval_and_predictions(root: Path, model: str, method: str, seed: int | None) -> None:
    run = "baseline" if seed is None else f"{method}-s{seed}"
    examples = [_example(i) for i in range(N)]
    refs = [e["reference"] for e in examples]
    answers = _answers(run)
    rouge = rouge_per_example(answers, refs)
    per_example = []
    for i, (a, r) in enumerate(zip(answers, refs, strict=True)):
        f1 = token_f1(a, r)
        per_example.append({"f1": f1, "em": exact_match(a, r), "rouge1": rouge["rouge1"][i],
                            "rouge2": rouge["rouge2"][i], "rougeL": rouge["rougeL"][i],
                            "bertscore": round(0.8 + 0.2 * f1, 6)})
    summary = {m: sum(p[m] for p in per_example) / N for m in ("f1", "em", "rouge1", "rouge2", "rougeL", "bertscore")}
    summary["bleu"] = bleu_corpus(answers, refs)
    gpu = {k: None for k in ("gpu_peak_memory_allocated_mb", "gpu_peak_memory_reserved_mb", "gpu_peak_memory_used_mb",
                             "gpu_power_mean_w", "gpu_power_peak_w", "gpu_utilization_mean_percent")}
    result = {"model": model, "method": method, **({"seed": seed} if seed is not None else {}), "split": "test",
              "n": N, **summary, "bertscore_model": "minilm", "bertscore_layers": 6,
              "inference": {"generation_seconds": 4.0, "generated_tokens": 160, "generated_tokens_per_s": 40.0,
                            "examples_per_s": 5.0, "latency_mean_s": 0.21, "latency_p50_s": 0.2,
                            "latency_p95_s": 0.3, "latency_examples": 8, "wall_time_s": 6.5, "peak_rss_mb": 900.0,
                            "mean_cpu_percent": 180.0, **gpu, "energy_j": None, "energy_wh": None,
                            "energy_source": None}}
    _write(root / "metrics/runs" / model / run / "eval.json", json.dumps(result))
    rows = [{**e, "answer": a, **p} for e, a, p in zip(examples, answers, per_example, strict=True)]
    _write(root / "predictions" / model / f"{run}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


def _train(root: Path, model: str, method: str, seed: int) -> None:
    pct = {"lora": 0.069, "qlora": 0.069, "top_layer": 4.92}[method]
    result = {"model": model, "method": method, "seed": seed, "device": "cpu", "trainable_params": int(pct * 1e4),
              "total_params": 1_000_000, "trainable_percent": pct, "steps": 45, "epochs": 1, "train_tokens": 50_000,
              "answer_tokens": 3000, "samples": 360, "train_seconds": 100.0 + seed % 7 + len(method),
              "final_loss": 1.2, "resumed_from_step": None, "lr": 1e-3, "val_loss": 1.4, "tokens_per_s": 500.0,
              "samples_per_s": 3.6, "mfu": 0.012, "peak_flops": 1e12, "peak_flops_source": "probe",
              "wall_time_s": 110.0, "peak_rss_mb": 1200.0 + 10 * len(method), "mean_cpu_percent": 190.0,
              "gpu_peak_memory_allocated_mb": None, "gpu_peak_memory_reserved_mb": None,
              "gpu_peak_memory_used_mb": None, "gpu_power_mean_w": None, "gpu_power_peak_w": None,
              "gpu_utilization_mean_percent": None, "energy_j": None, "energy_wh": None, "energy_source": None,
              "artifact_size_mb": 0.6 if "lora" in method else 12.0, "base_model_size_mb": 520.0, "examples": 360,
              **REGIME}
    mdir = root / "metrics/runs" / model / f"{method}-s{seed}"
    _write(mdir / "train.json", json.dumps(result))
    lines = ["t_s,rss_mb,cpu_percent,gpu_power_w,gpu_memory_used_mb,gpu_utilization_percent"]
    lines += [f"{t * 0.5},{1000 + 20 * t + len(method)},{180 + t % 3},,," for t in range(12)]
    _write(mdir / "train_timeseries.csv", "\n".join(lines) + "\n")


def _edit_train(root: Path, method: str, **fields) -> None:
    path = root / "metrics/runs" / MODEL / f"{method}-s42" / "train.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))


def make_inputs(root: Path, seeds: tuple[int, ...] = (42,)) -> None:
    """params.yaml, metrics/data.json and every run's outputs under ``root``."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["models"] = {MODEL: {"path": "unused"}}
    params["run"].update({"models": [MODEL], "methods": list(METHODS), "seeds": list(seeds)})
    params["eval"]["bootstrap_resamples"] = RESAMPLES
    _write(root / "params.yaml", yaml.safe_dump(params, sort_keys=False))
    data = {"documents": 30, "events": 52, "qa_pairs": 140, "answers_in_context": 138,
            "splits": {name: {"documents": d, "events": e, "qa_pairs_available": q, "qa_pairs": q,
                              "answers_not_in_context": 1 if name == "test" else 0,
                              "by_event_type": {"Deploy": q - 1, "Exhibit": 1}, "by_role": {"Subject": q}}
                       for name, d, e, q in (("train", 24, 42, 110), ("validation", 3, 5, 10), ("test", 3, 5, N))},
            "dropped": {"ambiguous_question": 2, "empty_answer": 3}}
    _write(root / "metrics/data.json", json.dumps(data))
    _eval_and_predictions(root, MODEL, "baseline", None)
    for method in METHODS:
        for seed in seeds:
            _train(root, MODEL, method, seed)
            _eval_and_predictions(root, MODEL, method, seed)


def run_report(root: Path) -> dict:
    """The stage's library path, in this process (the report reads and writes relative to the cwd)."""
    return build(load_params(root / "params.yaml"))


def assert_claims_hold(md: str, comp: dict) -> int:
    """Every "X is better/worse than Y on M" in the markdown is backed by a Holm-significant test in the
    same direction (the model is the one of the enclosing ### heading or verdict line); returns the count."""
    names = {v: k for k, v in DISPLAY_NAMES.items()}
    claim = re.compile(r"([\w-]+) is (better|worse) than ([\w-]+) on ([\w-]+)")
    models, model, checked = compare.models_of(comp), None, 0
    for line in md.splitlines():
        head = line.removeprefix("### ").removeprefix("- ").split(":")[0]
        if head in models:
            model = head
        found = claim.findall(line)
        assert len(found) == len(re.findall(r"\b(?:better|worse) than\b", line)), f"unparsed claim: {line}"
        for x, word, y, metric in found:
            tests = {(a, b): t for _, a, b, t in compare.comparisons(comp, model)}
            test = tests[(y, x)][names[metric]] if (y, x) in tests else tests[(x, y)][names[metric]]
            sign = 1 if (y, x) in tests else -1  # delta is b − a; the claim's subject is x
            assert test["p_adjusted"] < 0.05 and test["significant"], f"claim without adjusted significance: {line}"
            assert (sign * test["delta"] > 0) == (word == "better"), line
            checked += 1
    return checked


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """The stage run once, for real, as DVC would run it (subprocess in the project directory)."""
    root = tmp_path_factory.mktemp("report")
    make_inputs(root)
    proc = subprocess.run([sys.executable, str(REPO / "stages/resource_report.py")], cwd=root,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "tiny/lora F1=1.000 (significant vs baseline)" in proc.stdout and "WARNING" not in proc.stdout
    return root


def test_comparison_json(built):
    comp = json.loads((built / "metrics/comparison.json").read_text())
    rows = comp[MODEL]
    assert list(rows) == ["baseline", *METHODS]
    base, lora = rows["baseline"], rows["lora"]
    assert base["f1"] == 0.0 and lora["f1"] == 1.0 and lora["n_clusters"] == N // 2
    assert base["trainable_percent"] is None and base["train_seconds"] is None and "vs_baseline" not in base
    assert lora["trainable_percent"] == 0.069 and lora["memory_kind"] == "cpu_rss"
    assert lora["peak_memory_mb"] == 1240.0 and lora["gpu_power_peak_w"] is None and lora["energy_wh"] is None
    assert lora["f1_ci_low"] <= lora["f1"] <= lora["f1_ci_high"]
    assert base["inference_peak_memory_mb"] == 900.0 and base["latency_p50_s"] == 0.2
    assert base["latency_examples"] == 8 and base["examples_per_s"] == 5.0
    test = lora["vs_baseline"]["f1"]
    assert test["delta"] == pytest.approx(1.0) and test["significant"] and test["n_clusters"] == N // 2
    assert test["p_value"] == pytest.approx(1 / (RESAMPLES + 1))
    assert test["p_adjusted"] == pytest.approx(42 / (RESAMPLES + 1))  # Holm's first step over the whole family
    assert set(lora["vs_baseline"]) == set(compare.QUALITY)
    same = comp["pairwise"][MODEL]["qlora_vs_lora"]["f1"]
    assert same["delta"] == 0.0 and not same["significant"] and same["p_value"] == 1.0 and same["p_adjusted"] == 1.0
    assert same["mde"] == 0.0 and same["ci_low_adjusted"] == same["ci_high_adjusted"] == 0.0
    assert set(comp["pairwise"][MODEL]) == {"qlora_vs_lora", "top_layer_vs_lora", "top_layer_vs_qlora"}
    assert comp["family"]["size"] == 42 and comp["family"]["correction"] == "holm"
    assert "f1_sd" not in lora  # one seed: no sd
    assert all("answer" not in json.dumps(v) for v in comp.values())  # no per-example data in the DVC metric


def test_markdown_wording(built):
    md = (built / "metrics/comparison.md").read_text()
    zero, one = "0.000 [0.00, 0.00]", "1.000 [1.00, 1.00]"
    assert md.index("## Verdict") < md.index("## How to read this") < md.index("## Results")
    assert f"| tiny | lora | 0.069 | {one} | {one} | {one} | {one} |" in md
    # the study's column order (F1, EM, BLEU, BERTScore, R-1 ...) and "–" for what the baseline lacks
    assert f"| tiny | baseline | – | {zero} | {zero} | {zero} | 0.800 [0.80, 0.80] | {zero} |" in md
    assert "- lora is better than baseline on F1 (Δ = +1.000, adjusted p = 0.021)" in md
    # identical scores on every question: said so, not "mde 0.000"
    assert "- no difference in F1 between qlora and lora: the same score on every test question" in md
    assert "40 questions from 20 documents" in md and "One training seed per method" in md
    assert "| test | 3 | 5 | 40 | 40 | 1 |" in md and "| all | 30 | 52 | 140 |  | 2 |" in md
    assert "| Deploy | 109 | 9 | 39 |" in md and "| Subject | 110 | 10 | 40 |" in md
    assert "| empty_answer | 3 |" in md
    assert tables.study()["label"] in md and "| Llama 3.2 3B | top layer | 31.1 | 0.0640 |" in md
    assert "nrefs:1|case:mixed" in md.replace("\\|", "|")  # the one BLEU definition, named
    assert assert_claims_hold(md, json.loads((built / "metrics/comparison.json").read_text())) > 0


def test_cost_columns(built):
    md = (built / "metrics/comparison.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| model | method | train s"))
    assert "examples/s" in header and "gen tokens/s" not in header
    assert "latency p95 (≈ max) s | timed |" in header  # 8 timed examples: the p95 is about the maximum
    assert "| tiny | baseline | – | – | – | – | – | – | – | 5.00 | 0.200 | 0.300 | 8 | 0.88 (RSS) |" in md


def test_csv_outputs(built):
    with open(built / "plots/quality.csv", newline="") as f:
        quality = list(csv.DictReader(f))
    assert list(quality[0]) == ["run", "model", "method", "f1", "em", "bleu", "rouge1", "rouge2", "rougeL",
                                "bertscore"]
    assert [r["run"] for r in quality] == ["tiny/baseline", "tiny/lora", "tiny/qlora", "tiny/top_layer"]
    with open(built / "plots/cost.csv", newline="") as f:
        cost = list(csv.DictReader(f))
    assert list(cost[0]) == list(tables.COST_CSV_COLUMNS)
    assert cost[0]["train_seconds"] == "" and float(cost[1]["train_seconds"]) == 104.0
    with open(built / "metrics/comparison.csv", newline="") as f:
        comp = list(csv.DictReader(f))
    assert len(comp) == 4 and comp[1]["f1_delta_vs_baseline"] == "1.0" and comp[0]["gpu_power_peak_w"] == ""
    assert float(comp[1]["f1_p_adjusted_vs_baseline"]) == pytest.approx(42 / (RESAMPLES + 1))
    rows = compare.rows_of(json.loads((built / "metrics/comparison.json").read_text()))
    assert all(set(tables.flat(r)) <= set(tables.comparison_csv_columns()) for r in rows)  # no field left out


def test_html_self_contained_and_escaped(built):
    page = (built / "reports/index.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "<link" not in page and "@import" not in page
    assert SCRIPT not in page and "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page
    assert page.count("<script>") == 1  # our own inline filter code only
    for name in ("frontier", "forest", "quality", "cost", "timeseries"):
        assert f'alt="{name}_tiny.png" src="data:image/png;base64,' in page
    assert page.index('id="verdict"') < page.index('id="results"')
    assert page.count('class="q"') == N
    # tuned answers differ on the odd questions only (top layer wrong there); the baseline does not count
    assert page.count('data-disagree="1"') == N // 2
    assert '<option value="Exhibit">' in page and 'type="checkbox"' in page
    assert "the 3th brigade &amp; its partners" in page and tables.study()["label"] in page
    assert len(page.encode()) < 2_000_000


def test_html_escapes_every_field(tmp_path, monkeypatch):
    """Markup in a question, a context and a method's answer is shown as text, never run."""
    monkeypatch.chdir(tmp_path)
    make_inputs(tmp_path)
    path = Path("predictions/tiny/qlora-s42.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[3]["answer"] = '<script>document.title="pwned"</script>'
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run_report(tmp_path)
    page = Path("reports/index.html").read_text()
    assert "<script>document" not in page and "&lt;script&gt;document.title=&#34;pwned&#34;&lt;/script&gt;" in page
    assert page.count("<script>") == 1


def test_plots_written_and_byte_stable(built, monkeypatch):
    pngs = {p.name: p.read_bytes() for p in (built / "plots/images").glob("*.png")}
    assert set(pngs) == {f"{k}_tiny.png" for k in ("frontier", "forest", "quality", "cost", "timeseries")}
    assert all(data.startswith(b"\x89PNG") and b"Software" not in data for data in pngs.values())
    monkeypatch.chdir(built)
    run_report(built)  # the library path, in this process: same bytes as the stage's subprocess
    assert {p.name: p.read_bytes() for p in (built / "plots/images").glob("*.png")} == pngs


def test_holm_adjusted_wording():
    """Raw p < 0.05 is not enough: the wording follows the Holm-adjusted p of the whole family."""
    family = [{"delta": d, "p_value": p, "se": 0.03} for d, p in ((0.2, 0.001), (-0.07, 0.02), (0.05, 0.03),
                                                                   (0.01, 0.5))]
    info = compare.adjust(family, n_resamples=10_000)
    assert [t["p_adjusted"] for t in family] == pytest.approx([0.004, 0.06, 0.06, 0.5])
    assert info["size"] == 4 and [t["significant"] for t in family] == [True, False, False, False]
    assert tables.claim("lora", "qlora", "f1", family[0]) == (
        "qlora is better than lora on F1 (Δ = +0.200, adjusted p = 0.004)")
    text = tables.claim("lora", "qlora", "f1", family[1])
    assert text.startswith("no significant difference in F1 between qlora and lora (Δ = −0.070, adjusted p = 0.06")
    assert f"|Δ| ≥ {family[1]['mde']:.3f}" in text and family[1]["mde"] > 0.07  # the split was too small to tell
    assert family[0]["ci_low_adjusted"] < family[0]["delta"] - 1.96 * 0.03  # Bonferroni-wide, not the raw 95 %


def test_raw_significant_but_adjusted_not_in_report(built):
    """A comparison with raw p = 0.02 in a family of 42 is worded "no significant difference" everywhere."""
    comp = json.loads((built / "metrics/comparison.json").read_text())
    test = comp["pairwise"][MODEL]["qlora_vs_lora"]["f1"]
    test.update(delta=-0.07, p_value=0.02, se=0.03)
    comp["family"] = compare.adjust([t for *_, ts in compare.comparisons(comp) for t in ts.values()],
                                    n_resamples=RESAMPLES)
    assert test["p_value"] < 0.05 <= test["p_adjusted"] and not test["significant"]
    trains = {MODEL: {m: [{}] for m in METHODS}}
    md = tables.render_markdown(comp, {}, trains, n_resamples=RESAMPLES)
    assert "no significant difference in F1 between qlora and lora (Δ = −0.070" in md
    assert "qlora is worse than lora" not in md and "lora is better than qlora" not in md
    row = next(line for line in md.splitlines() if line.startswith("| qlora − lora |"))
    assert row.startswith("| qlora − lora | −0.070 [") and "n.s., mde" in row.split("|")[2]
    assert assert_claims_hold(md, comp) > 0


def test_delta_table_marks_only_adjusted_significant(built):
    comp = json.loads((built / "metrics/comparison.json").read_text())
    header, rows = tables.delta_table(comp, MODEL)
    assert header[:3] == ["comparison", "F1", "EM"]
    assert [r[0][0] for r in rows] == ["lora − baseline", "qlora − baseline", "top_layer − baseline",
                                       "qlora − lora", "top_layer − lora", "top_layer − qlora"]
    by_label = {r[0][0]: r[1:] for r in rows}
    assert by_label["lora − baseline"][0] == ("+1.000 [+1.00, +1.00]", True)
    assert by_label["qlora − lora"][0] == ("+0.000 [+0.00, +0.00] n.s., identical", False)  # same on every question
    marked = sum(sig for r in rows for _, sig in r[1:])
    assert marked == sum(t["significant"] for *_, ts in compare.comparisons(comp) for t in ts.values()) == 35
    md = (built / "metrics/comparison.md").read_text()
    assert "| lora − baseline | +1.000 [+1.00, +1.00] \\* |" in md
    assert md.count(" \\* |") == marked
    page = (built / "reports/index.html").read_text()
    assert page.count('<td class="sig">') == marked


def test_verdict_and_frontier(tmp_path, monkeypatch):
    """On training time: top_layer (cheapest, significantly worse) and lora are the front; qlora costs
    twice lora's time for no significant F1 difference: dominated. On memory qlora is cheapest and as good
    as lora: the front; lora is dominated by it, top_layer by lora (significantly better, less memory)."""
    monkeypatch.chdir(tmp_path)
    make_inputs(tmp_path)
    for method, seconds, rss in (("lora", 100.0, 2000.0), ("qlora", 200.0, 1000.0), ("top_layer", 50.0, 3000.0)):
        _edit_train(tmp_path, method, train_seconds=seconds, peak_rss_mb=rss)
    comp = run_report(tmp_path)
    time_front, memory_front = comp["frontier"][MODEL]["train_seconds"], comp["frontier"][MODEL]["peak_memory_mb"]
    assert time_front["front"] == ["lora", "top_layer"]
    assert time_front["dominated"] == {"qlora": {"by": "lora", "reason": "cheaper", "delta": 0.0, "p_adjusted": 1.0}}
    assert memory_front["front"] == ["qlora"]
    assert {a: d["by"] for a, d in memory_front["dominated"].items()} == {"lora": "qlora", "top_layer": "lora"}
    sentence = (
        "tiny: on F1 vs training time the front is lora, top_layer; dominated: qlora by lora (lora needs less "
        "training time and its F1 is not lower: ΔF1 = +0.000, not significant), and on F1 vs peak memory "
        "the front is qlora; dominated: lora by qlora (qlora needs less peak memory and its F1 is not lower: "
        "ΔF1 = +0.000, not significant); top_layer by lora (lora is better than top_layer on F1, adjusted "
        "p = 0.021, at no more peak memory, within 5%).")
    md = Path("metrics/comparison.md").read_text()
    verdict = md.split("## Verdict: quality vs cost")[1].split("##")[0]
    assert f"- {sentence}" in verdict
    assert assert_claims_hold(md, comp) > 0
    # the DVC metric: the same verdict in a few strings (lora and qlora tie on F1; top_layer is significantly worse)
    assert json.loads(Path("metrics/verdict.json").read_text()) == {MODEL: {
        "best_f1": "lora, qlora", "front_train_seconds": "lora, top_layer", "front_peak_memory_mb": "qlora"}}


def test_best_f1_keeps_what_the_test_cannot_separate():
    """best_f1: the highest F1 and every method not significantly below it, wherever it sits in the order."""
    rows = {"baseline": {"f1": 0.9}, "a": {"f1": 0.5}, "b": {"f1": 0.7}, "c": {"f1": 0.65}, "d": {"f1": None}}
    pairwise = {"b_vs_a": {"f1": {"delta": 0.2, "significant": True}},
                "c_vs_a": {"f1": {"delta": 0.15, "significant": True}},
                "c_vs_b": {"f1": {"delta": -0.05, "significant": False}}}
    assert frontier.best(rows, pairwise) == ["b", "c"]  # the baseline is not a method; d was not scored
    pairwise["c_vs_b"]["f1"]["significant"] = True
    assert frontier.best(rows, pairwise) == ["b"]
    empty = {cost: {"front": []} for cost, _ in frontier.COSTS}
    assert frontier.verdict({"baseline": {"f1": 0.2}}, {}, empty) == {
        "best_f1": "none", "front_train_seconds": "none", "front_peak_memory_mb": "none"}


def test_dominance_rule():
    """Costs within the tolerance are equal; quality counts only when significant after correction."""
    better = {"delta": 0.1, "significant": True}
    worse = {"delta": -0.1, "significant": True}
    same = {"delta": 0.03, "significant": False}  # b nominally better, not significantly
    lower = {"delta": -0.03, "significant": False}  # b nominally worse, not significantly
    assert frontier.dominance(100.0, 100.0, better) == "better"
    assert frontier.dominance(104.0, 100.0, better) == "better"  # within 5 %: as cheap
    assert frontier.dominance(120.0, 100.0, better) is None  # dearer: a trade-off, not dominance
    assert frontier.dominance(50.0, 100.0, worse) is None  # cheaper but worse: both stay on the front
    assert frontier.dominance(90.0, 100.0, same) == "cheaper"
    assert frontier.dominance(97.0, 100.0, same) is None  # 3 % cheaper is timing noise
    assert frontier.dominance(200.0, 100.0, same) is None
    # cheaper but nominally worse: "not significant" is not "equal", so a (possibly) better dearer a stays
    assert frontier.dominance(50.0, 100.0, lower) is None


def test_regime_table_flags_a_difference(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_inputs(tmp_path)
    _edit_train(tmp_path, "qlora", gradient_checkpointing=True)
    run_report(tmp_path)
    md = Path("metrics/comparison.md").read_text()
    assert "| gradient checkpointing | no | yes | no | DIFFERS |" in md
    assert "| trainable dtype | float32 | float32 | float32 | yes |" in md
    assert "| training data sha256 | 0123456789ab | 0123456789ab | 0123456789ab | yes |" in md
    assert ("these fields DIFFER, so differences between those methods mix the method with the regime: tiny: "
            "gradient checkpointing.") in md
    page = Path("reports/index.html").read_text()
    assert page.count('<td class="flag">DIFFERS</td>') == 1


def test_regime_table_reads_old_train_json():
    """A train.json from before the regime fields: rows nobody recorded are left out, nothing flagged."""
    header, rows, flagged = tables.regime_table({"lora": [{"lr": 0.001, "steps": 45}],
                                                 "qlora": [{"lr": 0.001, "steps": 45}]})
    assert header == ["field", "lora", "qlora", "same for all"]
    assert rows == [["learning rate", "0.001", "0.001", "yes"], ["optimizer steps", "45", "45", "yes"]]
    assert flagged == []


def test_committed_report_makes_no_unsupported_claim():
    """The committed metrics/comparison.md claims a direction only where comparison.json's adjusted p < 0.05."""
    comp = json.loads((REPO / "metrics/comparison.json").read_text())
    if "family" not in comp:
        pytest.skip("metrics/comparison.json predates the Holm-adjusted report: regenerate it (dvc repro)")
    assert_claims_hold((REPO / "metrics/comparison.md").read_text(), comp)


def test_missing_eval_json_names_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_inputs(tmp_path)
    (tmp_path / "metrics/runs/tiny/qlora-s42/eval.json").unlink()
    with pytest.raises(FtbenchError, match=r"metrics/runs/tiny/qlora-s42/eval\.json: file not found.*run dvc repro"):
        load_runs(load_params())
    proc = subprocess.run([sys.executable, str(REPO / "stages/resource_report.py")], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "qlora-s42/eval.json" in proc.stderr and "Traceback" not in proc.stderr


def test_mismatched_predictions_rejected(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_inputs(tmp_path)
    path = tmp_path / "predictions/tiny/lora-s42.jsonl"
    path.write_text("".join(path.read_text().splitlines(keepends=True)[::-1]))
    with pytest.raises(FtbenchError, match="lora-s42.jsonl: test examples differ"):
        load_runs(load_params())


def test_predictions_without_doc_id_rejected(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_inputs(tmp_path)
    path = tmp_path / "predictions/tiny/baseline.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[2]["doc_id"] = None
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(FtbenchError, match=r"baseline\.jsonl: line 3 has no doc_id"):
        load_runs(load_params())


def test_several_seeds_mean_sd_and_seed_aware_ci(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_inputs(tmp_path, seeds=(42, 43))
    run_report(tmp_path)
    params = load_params()
    comp = json.loads((tmp_path / "metrics/comparison.json").read_text())
    top, lora = comp[MODEL]["top_layer"], comp[MODEL]["lora"]
    # F1 per seed: 20/40 and 30/40 right (wrong answers share no token with the reference)
    assert top["seeds"] == "42,43" and top["f1"] == pytest.approx(0.625)
    assert top["f1_sd"] == pytest.approx(statistics.stdev([0.5, 0.75])) and lora["f1_sd"] == 0.0
    assert top["train_seconds_sd"] > 0
    # the CI gets every seed's rows and the documents: seeds and documents are both resampled
    runs = {seed: read_jsonl(f"predictions/tiny/top_layer-s{seed}.jsonl") for seed in (42, 43)}
    docs = [_example(i)["doc_id"] for i in range(N)]
    refs = [_example(i)["reference"] for i in range(N)]
    expected = bootstrap_ci_seeds([runs[42], runs[43]], "f1", clusters=docs, n_resamples=RESAMPLES, seed=params.seed)
    assert (top["f1_ci_low"], top["f1_ci_high"]) == pytest.approx(expected)
    assert top["f1_ci_low"] < top["f1"] < top["f1_ci_high"]
    answers = [_answers(f"top_layer-s{seed}") for seed in (42, 43)]
    expected = bootstrap_ci_seeds([runs[42], runs[43]], "bleu", clusters=docs, n_resamples=RESAMPLES,
                                  seed=params.seed, predictions_per_seed=answers, references=refs)
    assert (top["bleu_ci_low"], top["bleu_ci_high"]) == pytest.approx(expected)
    assert top["bleu"] == pytest.approx((bleu_corpus(answers[0], refs) + bleu_corpus(answers[1], refs)) / 2)
    # the paired tests get both seeds too (BLEU included; no "first seed" shortcut)
    assert top["vs_baseline"]["f1"]["delta"] == pytest.approx(0.625)
    assert top["vs_baseline"]["bleu"]["delta"] == pytest.approx(top["bleu"] - comp[MODEL]["baseline"]["bleu"])
    md = (tmp_path / "metrics/comparison.md").read_text()
    assert " ± 0.177 [" in md and " ± 0.000 [" in md and "2 training seeds per method" in md
    assert all(set(tables.flat(r)) <= set(tables.comparison_csv_columns()) for r in compare.rows_of(comp))
    assert 'top_layer-s43' in (tmp_path / "reports/index.html").read_text()


def test_too_few_resamples_for_the_family_is_said(tmp_path, monkeypatch):
    """42 tests and 200 resamples: the smallest adjusted p is 42/201 ≥ 0.05, so nothing can be significant."""
    monkeypatch.chdir(tmp_path)
    make_inputs(tmp_path)
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["eval"]["bootstrap_resamples"] = 200
    Path("params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = subprocess.run([sys.executable, str(REPO / "stages/resource_report.py")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "WARNING: 42 tests and too few resamples" in proc.stdout
    md = Path("metrics/comparison.md").read_text()
    assert "Raise eval.bootstrap_resamples to at least 840." in md and " is better than " not in md


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium package")
def test_html_renders_in_chromium(built, tmp_path):
    from PIL import Image

    shot = tmp_path / "shot.png"
    proc = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1280,2000",
         (built / "reports/index.html").as_uri()],
        capture_output=True, text=True, timeout=180)
    assert shot.is_file(), proc.stderr[-2000:]
    with Image.open(shot) as img:
        colours = img.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 200  # text, tables and charts, not a blank page


def test_no_bertscore_shows_dash(tmp_path, monkeypatch):
    """eval.json without BERTScore (eval.bertscore_model: none): "–", no test, no invented number."""
    monkeypatch.chdir(tmp_path)
    make_inputs(tmp_path)
    for path in Path("metrics/runs").glob("*/*/eval.json"):
        result = json.loads(path.read_text())
        del result["bertscore"]
        path.write_text(json.dumps(result))
    for path in Path("predictions").glob("*/*.jsonl"):
        rows = [{**json.loads(line), "bertscore": None} for line in path.read_text().splitlines()]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    comp = run_report(tmp_path)
    assert comp[MODEL]["lora"]["bertscore"] is None and "bertscore" not in comp[MODEL]["lora"]["vs_baseline"]
    assert comp["family"]["size"] == 36
    md = Path("metrics/comparison.md").read_text()
    assert "| tiny | lora | 0.069 | 1.000 [1.00, 1.00] | 1.000 [1.00, 1.00] | 1.000 [1.00, 1.00] | – |" in md
    assert "BERTScore |" not in md.split("## Paired comparisons")[1].split("## Cost")[0]



def test_human_votes_shown_beside_the_automatic_metrics(built, tmp_path):
    """No metrics/human.json: the report says how to start rating. With one, the win rates appear in both
    comparison.md and index.html (escaped), so `git add votes && dvc repro` reaches the report."""
    from ftbench.human import summarise
    from ftbench.io import write_json

    md = (built / "metrics/comparison.md").read_text()
    page = (built / "reports/index.html").read_text()
    assert "No human votes yet" in md and "python -m ftbench.compare" in md
    assert 'id="human"' in page and "No human votes yet" in page

    root = tmp_path / "with-votes"
    shutil.copytree(built, root)
    vote = {"rater": "ann", "time": "2026-01-01T00:00:00+00:00", "model": MODEL, "question_id": None,
            "run_a": "baseline", "run_b": "lora-s42", "choice": "b"}
    preds = [json.loads(line) for line in (root / "predictions" / MODEL / "baseline.jsonl").read_text().splitlines()]
    votes = [{**vote, "question_id": p["id"]} for p in preds[:3]]
    runs = {run: {p["id"]: p for p in map(json.loads, (root / "predictions" / MODEL / f"{run}.jsonl")
                                              .read_text().splitlines())} for run in ("baseline", "lora-s42")}
    write_json(root / "metrics/human.json", summarise(votes, {MODEL: runs}, n_resamples=200, seed=0))
    proc = subprocess.run([sys.executable, str(REPO / "stages/resource_report.py")], cwd=root,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    md = (root / "metrics/comparison.md").read_text()
    assert "No human votes yet" not in md and f"### {MODEL} (3 votes, 1 raters)" in md
    assert "| lora-s42 | 3 | 3 | 0 | 0 | 1.00 [" in md
    page = (root / "reports/index.html").read_text()
    assert "3 votes" in page and "lora-s42" in page.split('id="human"')[1]
