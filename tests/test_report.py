"""Tests for the resource_report stage on synthetic run outputs (no model is loaded).

One model, the baseline and three methods on 20 test questions: the baseline is wrong everywhere,
LoRA right everywhere, QLoRA answers exactly like LoRA, and top-layer tuning is right on half (seed 42;
another seed is also right on every fourth question, so that results differ across seeds).
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

from ftbench import report
from ftbench.io import FtbenchError
from ftbench.metrics import (
    bleu_corpus,
    bootstrap_ci,
    bootstrap_ci_seed_mean_bleu,
    exact_match,
    rouge_per_example,
    token_f1,
    with_confidence_intervals,
)
from ftbench.params import load_params

REPO = Path(__file__).resolve().parents[1]
MODEL = "tiny"
METHODS = ("lora", "qlora", "top_layer")
N = 20
EVENTS = ("Deploy", "Exhibit", "Experiment")
SCRIPT = "<script>alert('x')</script>"


def _example(i: int) -> dict:
    return {"id": f"q{i}", "doc_id": f"d{i // 4}", "event_type": EVENTS[i % 3], "role": "Subject",
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
    cis = with_confidence_intervals(per_example, summary, answers, refs, n_resamples=200, seed=42)
    gpu = {k: None for k in ("gpu_peak_memory_allocated_mb", "gpu_peak_memory_reserved_mb", "gpu_peak_memory_used_mb",
                             "gpu_power_mean_w", "gpu_power_peak_w", "gpu_utilization_mean_percent")}
    result = {"model": model, "method": method, **({"seed": seed} if seed is not None else {}), "split": "test",
              "n": N, **summary, "ci95": {k: [v["ci_low"], v["ci_high"]] for k, v in cis.items()},
              "bertscore_model": "minilm", "bertscore_layers": 6,
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
              "artifact_size_mb": 0.6 if "lora" in method else 12.0, "base_model_size_mb": 520.0, "examples": 360}
    mdir = root / "metrics/runs" / model / f"{method}-s{seed}"
    _write(mdir / "train.json", json.dumps(result))
    lines = ["t_s,rss_mb,cpu_percent,gpu_power_w,gpu_memory_used_mb,gpu_utilization_percent"]
    lines += [f"{t * 0.5},{1000 + 20 * t + len(method)},{180 + t % 3},,," for t in range(12)]
    _write(mdir / "train_timeseries.csv", "\n".join(lines) + "\n")


def make_inputs(root: Path, seeds: tuple[int, ...] = (42,)) -> None:
    """params.yaml, metrics/data.json and every run's outputs under ``root``."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["models"] = {MODEL: {"path": "unused"}}
    params["run"].update({"models": [MODEL], "methods": list(METHODS), "seeds": list(seeds)})
    params["eval"]["bootstrap_resamples"] = 200
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
    return report.build(load_params(root / "params.yaml"))


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """The stage run once, for real, as DVC would run it (subprocess in the project directory)."""
    root = tmp_path_factory.mktemp("report")
    make_inputs(root)
    proc = subprocess.run([sys.executable, str(REPO / "stages/resource_report.py")], cwd=root,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "tiny/lora F1=1.000 (significant vs baseline)" in proc.stdout
    return root


def test_comparison_json(built):
    comp = json.loads((built / "metrics/comparison.json").read_text())
    rows = comp[MODEL]
    assert list(rows) == ["baseline", *METHODS]
    base, lora = rows["baseline"], rows["lora"]
    assert base["f1"] == 0.0 and lora["f1"] == 1.0
    assert base["trainable_percent"] is None and base["train_seconds"] is None and "vs_baseline" not in base
    assert lora["trainable_percent"] == 0.069 and lora["memory_kind"] == "cpu_rss"
    assert lora["peak_memory_mb"] == 1240.0 and lora["gpu_power_peak_w"] is None and lora["energy_wh"] is None
    assert lora["f1_ci_low"] <= lora["f1"] <= lora["f1_ci_high"]
    assert base["inference_peak_memory_mb"] == 900.0 and base["latency_p50_s"] == 0.2
    test = lora["vs_baseline"]["f1"]
    assert test["delta"] == pytest.approx(1.0) and test["significant"] and test["p_value"] < 0.05
    assert set(lora["vs_baseline"]) == set(report.QUALITY)
    same = comp["pairwise"][MODEL]["qlora_vs_lora"]["f1"]
    assert same["delta"] == 0.0 and not same["significant"] and same["p_value"] == 1.0
    assert set(comp["pairwise"][MODEL]) == {"qlora_vs_lora", "top_layer_vs_lora", "top_layer_vs_qlora"}
    assert "f1_sd" not in lora  # one seed: no sd


def test_markdown_wording(built):
    md = (built / "metrics/comparison.md").read_text()
    zero, one = "0.000 [0.00, 0.00]", "1.000 [1.00, 1.00]"
    assert f"| tiny | lora | 0.069 | {one} | {one} | {one} | {one} |" in md
    # the study's column order (F1, EM, BLEU, BERTScore, R-1 ...) and "–" for what the baseline lacks
    assert f"| tiny | baseline | – | {zero} | {zero} | {zero} | 0.800 [0.80, 0.80] | {zero} |" in md
    assert re.search(r"ΔF1 = \+1\.000 \[1\.000, 1\.000\], p = 0\.0050 — lora is better than baseline on F1", md)
    assert "ΔF1 = +0.000 [0.000, 0.000], p = 1.0 — no significant difference in F1 between qlora and lora" in md
    assert "| test | 3 | 5 | 20 | 20 | 1 |" in md and "| all | 30 | 52 | 140 |  | 2 |" in md
    assert "| Deploy | 109 | 9 | 19 |" in md and "| Subject | 110 | 10 | 20 |" in md
    assert "| empty_answer | 3 |" in md
    assert report.STUDY_LABEL in md and "| Llama 3.2 3B | top layer | 31.1 | 0.0640 |" in md
    assert "better than" not in md.split("### tiny: qlora vs lora")[1].split("###")[0]


def test_csv_outputs(built):
    with open(built / "plots/quality.csv", newline="") as f:
        quality = list(csv.DictReader(f))
    assert list(quality[0]) == ["run", "model", "method", "f1", "em", "bleu", "rouge1", "rouge2", "rougeL",
                                "bertscore"]
    assert [r["run"] for r in quality] == ["tiny/baseline", "tiny/lora", "tiny/qlora", "tiny/top_layer"]
    with open(built / "plots/cost.csv", newline="") as f:
        cost = list(csv.DictReader(f))
    assert list(cost[0]) == list(report.COST_CSV_COLUMNS)
    assert cost[0]["train_seconds"] == "" and float(cost[1]["train_seconds"]) == 104.0
    with open(built / "metrics/comparison.csv", newline="") as f:
        comp = list(csv.DictReader(f))
    assert len(comp) == 4 and comp[1]["f1_delta_vs_baseline"] == "1.0" and comp[0]["gpu_power_peak_w"] == ""
    rows = report.rows_of(json.loads((built / "metrics/comparison.json").read_text()))
    assert all(set(report._flat(r)) <= set(report.comparison_csv_columns()) for r in rows)  # no field left out


def test_html_self_contained_and_escaped(built):
    page = (built / "reports/index.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "<link" not in page and "@import" not in page
    assert SCRIPT not in page and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert page.count("<script>") == 1  # our own inline filter code only
    for name in ("quality", "cost", "timeseries", "tradeoff"):
        assert f'alt="{name}_tiny.png" src="data:image/png;base64,' in page
    assert page.count('class="q"') == N
    # tuned answers differ on the odd questions only (top layer wrong there); the baseline does not count
    assert page.count('data-disagree="1"') == N // 2
    assert '<option value="Exhibit">' in page and 'type="checkbox"' in page
    assert "the 3th brigade &amp; its partners" in page and report.STUDY_LABEL in page
    assert len(page.encode()) < 2_000_000


def test_plots_written_and_byte_stable(built, monkeypatch):
    pngs = {p.name: p.read_bytes() for p in (built / "plots/images").glob("*.png")}
    assert set(pngs) == {f"{k}_tiny.png" for k in ("quality", "cost", "timeseries", "tradeoff")}
    assert all(data.startswith(b"\x89PNG") and b"Software" not in data for data in pngs.values())
    monkeypatch.chdir(built)
    run_report(built)  # the library path, in this process: same bytes as the stage's subprocess
    assert {p.name: p.read_bytes() for p in (built / "plots/images").glob("*.png")} == pngs


def test_missing_eval_json_names_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_inputs(tmp_path)
    (tmp_path / "metrics/runs/tiny/qlora-s42/eval.json").unlink()
    with pytest.raises(FtbenchError, match=r"metrics/runs/tiny/qlora-s42/eval\.json: file not found.*run dvc repro"):
        report.load_runs(load_params())
    proc = subprocess.run([sys.executable, str(REPO / "stages/resource_report.py")], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "qlora-s42/eval.json" in proc.stderr and "Traceback" not in proc.stderr


def test_mismatched_predictions_rejected(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_inputs(tmp_path)
    path = tmp_path / "predictions/tiny/lora-s42.jsonl"
    path.write_text("".join(path.read_text().splitlines(keepends=True)[::-1]))
    with pytest.raises(FtbenchError, match="lora-s42.jsonl: test examples differ"):
        report.load_runs(load_params())


def test_several_seeds_mean_sd_and_pooled_ci(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_inputs(tmp_path, seeds=(42, 43))
    run_report(tmp_path)
    params = load_params()
    comp = json.loads((tmp_path / "metrics/comparison.json").read_text())
    top, lora = comp[MODEL]["top_layer"], comp[MODEL]["lora"]
    # F1 per seed: 10/20 and 15/20 right (wrong answers share no token with the reference)
    assert top["seeds"] == "42,43" and top["f1"] == pytest.approx(0.625)
    assert top["f1_sd"] == pytest.approx(statistics.stdev([0.5, 0.75])) and lora["f1_sd"] == 0.0
    assert top["train_seconds_sd"] > 0
    # CIs resample the examples once over both seeds: per-example scores averaged across seeds ...
    pooled = [{"f1": 1.0 if i % 2 == 0 else (0.5 if i % 4 == 3 else 0.0)} for i in range(N)]
    expected = bootstrap_ci(pooled, "f1", n_resamples=params.eval.bootstrap_resamples, seed=params.seed)
    assert (top["f1_ci_low"], top["f1_ci_high"]) == pytest.approx(expected)
    assert top["f1_ci_low"] < top["f1"] < top["f1_ci_high"]
    # ... and corpus BLEU of every seed recomputed on the same draw, then averaged
    answers = [_answers(f"top_layer-s{seed}") for seed in (42, 43)]
    refs = [_example(i)["reference"] for i in range(N)]
    expected = bootstrap_ci_seed_mean_bleu(answers, refs, n_resamples=params.eval.bootstrap_resamples,
                                           seed=params.seed)
    assert (top["bleu_ci_low"], top["bleu_ci_high"]) == pytest.approx(expected)
    assert top["bleu"] == pytest.approx((bleu_corpus(answers[0], refs) + bleu_corpus(answers[1], refs)) / 2)
    assert top["bleu_ci_low"] <= top["bleu"] <= top["bleu_ci_high"]
    # the paired test against the baseline uses the pooled scores too: delta = 0.625 − 0
    assert top["vs_baseline"]["f1"]["delta"] == pytest.approx(0.625)
    md = (tmp_path / "metrics/comparison.md").read_text()
    assert " ± 0.177 [" in md and " ± 0.000 [" in md
    assert all(set(report._flat(r)) <= set(report.comparison_csv_columns()) for r in report.rows_of(comp))
    assert 'top_layer-s43' in (tmp_path / "reports/index.html").read_text()


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
        del result["bertscore"], result["ci95"]["bertscore"]
        path.write_text(json.dumps(result))
    for path in Path("predictions").glob("*/*.jsonl"):
        rows = [{**json.loads(line), "bertscore": None} for line in path.read_text().splitlines()]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run_report(tmp_path)
    comp = json.loads(Path("metrics/comparison.json").read_text())
    assert comp[MODEL]["lora"]["bertscore"] is None and "bertscore" not in comp[MODEL]["lora"]["vs_baseline"]
    md = Path("metrics/comparison.md").read_text()
    assert "| tiny | lora | 0.069 | 1.000 [1.00, 1.00] | 1.000 [1.00, 1.00] | 1.000 [1.00, 1.00] | – |" in md
    assert "ΔBERTScore" not in md
