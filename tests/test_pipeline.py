"""The real `dvc` CLI on this repository's pipeline, in a scratch git repo, with a tiny random Llama."""

from __future__ import annotations

import json

import pytest
import yaml

from conftest import make_project, run

STAGES = ["translate", "format", "baseline@tiny", "train@tiny-lora-42", "train@tiny-top_layer-42",
          "evaluate@tiny-lora-42", "evaluate@tiny-top_layer-42", "resource_report"]


@pytest.fixture(scope="module")
def repro_project(tmp_path_factory, tiny_llama):
    """One `dvc repro` shared by the checks below (it is the expensive part)."""
    root = make_project(tmp_path_factory.mktemp("pipeline") / "project", tiny_llama)
    return root, run(["dvc", "repro"], root)


def test_repro_runs_every_stage(repro_project):
    root, proc = repro_project
    for stage in STAGES:
        assert f"'{stage}'" in proc.stdout, f"stage {stage} did not run:\n{proc.stdout[-3000:]}"


def test_every_stage_output_exists_and_is_sane(repro_project):
    root, _ = repro_project
    for split in ("train", "validation", "test"):
        rows = [json.loads(line) for line in (root / f"data/processed/{split}.jsonl").read_text().splitlines()]
        assert rows and all({"instruction", "input", "output"} <= set(r) for r in rows)
    data = json.loads((root / "metrics/data.json").read_text())
    assert data["splits"]["train"]["qa_pairs"] == 16 and data["splits"]["test"]["qa_pairs"] == 8
    base = json.loads((root / "metrics/runs/tiny/baseline/eval.json").read_text())
    assert base["n"] == 8 and 0 <= base["f1"] <= 1 and base["method"] == "baseline"
    for method, artifact in (("lora", "adapter_model.safetensors"), ("top_layer", "tuned_layers.safetensors")):
        assert (root / f"models/tiny/{method}-s42/{artifact}").exists()
        train = json.loads((root / f"metrics/runs/tiny/{method}-s42/train.json").read_text())
        assert train["steps"] == 4 and train["samples"] == 16
        assert 0 < train["trainable_percent"] < 100 and train["tokens_per_s"] > 0
        assert train["gpu_power_mean_w"] is None  # no GPU here: nothing invented
        loss = (root / f"metrics/runs/tiny/{method}-s42/dvclive/plots/metrics/train/loss.tsv").read_text()
        assert loss.splitlines()[0].split("\t")[:2] == ["step", "loss"] and len(loss.splitlines()) == 5
        ev = json.loads((root / f"metrics/runs/tiny/{method}-s42/eval.json").read_text())
        assert ev["n"] == 8 and set(ev["ci95"]) >= {"f1", "bleu", "rougeL"}
        preds = (root / f"predictions/tiny/{method}-s42.jsonl").read_text().splitlines()
        assert len(preds) == 8 and {"question", "reference", "answer", "f1"} <= set(json.loads(preds[0]))
    comparison = json.loads((root / "metrics/comparison.json").read_text())
    assert {"baseline", "lora", "top_layer"} <= set(comparison["tiny"])
    assert (root / "reports/index.html").stat().st_size > 1000
    assert list((root / "plots").glob("*.png"))


def test_status_clean_and_metrics_show_every_run(repro_project):
    root, _ = repro_project
    status = run(["dvc", "status"], root)
    assert "up to date" in status.stdout, status.stdout
    shown = run(["dvc", "metrics", "show", "--json"], root).stdout
    for path in ("metrics/runs/tiny/baseline/eval.json", "metrics/runs/tiny/lora-s42/eval.json",
                 "metrics/runs/tiny/top_layer-s42/train.json", "metrics/comparison.json"):
        assert path in shown
    plots = run(["dvc", "plots", "show", "--json"], root).stdout
    assert "loss" in plots and "quality.csv" in plots


def test_exp_run_reruns_only_dependent_stages(repro_project):
    """Changing a training knob reruns train/evaluate/report, never translate, format or baseline."""
    root, _ = repro_project
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "repro"], root)
    proc = run(["dvc", "exp", "run", "-S", "methods.top_layer.lr=1e-4"], root)
    out = proc.stdout
    for stage in ("train@tiny-top_layer-42", "evaluate@tiny-top_layer-42", "resource_report"):
        assert f"Running stage '{stage}'" in out, out[-3000:]
    for stage in ("translate", "format", "baseline@tiny", "train@tiny-lora-42", "evaluate@tiny-lora-42"):
        assert f"Running stage '{stage}'" not in out, f"{stage} reran:\n{out[-3000:]}"
    diff = run(["dvc", "exp", "show", "--json"], root).stdout
    assert "methods.top_layer.lr" in diff or "1e-04" in diff or "0.0001" in diff
