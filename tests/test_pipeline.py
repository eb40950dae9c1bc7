"""The real `dvc` CLI on this repository's pipeline, in a scratch git repo, with a tiny random Llama."""

from __future__ import annotations

import functools
import json

import pytest
import yaml
from conftest import make_project, run
from test_exp_show import EXP_SHOW_FILTER, KEPT_FIXED, MAX_COLUMNS, declared_metrics, expected_columns, metric_keys

from ftbench.evaluation import QUALITY_KEYS

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
    docs_of = {}
    for split in ("train", "validation", "test"):
        rows = [json.loads(line) for line in (root / f"data/processed/{split}.jsonl").read_text().splitlines()]
        assert rows and all({"instruction", "input", "output"} <= set(r) for r in rows)
        docs_of[split] = {r["doc_id"] for r in rows}
    assert not docs_of["train"] & docs_of["test"] and not docs_of["train"] & docs_of["validation"]
    assert not docs_of["validation"] & docs_of["test"]
    data = json.loads((root / "metrics/data.json").read_text())
    assert data["splits"]["train"]["qa_pairs"] == 16 and data["splits"]["test"]["qa_pairs"] == 8
    base = json.loads((root / "metrics/runs/tiny/baseline/eval.json").read_text())
    assert base["n"] == 8 and 0 <= base["f1"] <= 1 and base["method"] == "baseline"
    # bitsandbytes is asked for its CPU flag only where the run loaded it (LoRA, through peft): a stage that
    # needs neither peft nor bitsandbytes does not import them (~3 s each time), so its flag stays null
    assert base["env"]["cpu_avx512bf16"] is None
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
        flag = bool if method == "lora" else type(None)
        assert isinstance(train["env"]["cpu_avx512bf16"], flag) and isinstance(ev["env"]["cpu_avx512bf16"], flag)
        preds = (root / f"predictions/tiny/{method}-s42.jsonl").read_text().splitlines()
        assert len(preds) == 8 and {"question", "reference", "answer", "f1"} <= set(json.loads(preds[0]))
    comparison = json.loads((root / "metrics/comparison.json").read_text())
    assert {"baseline", "lora", "top_layer"} <= set(comparison["tiny"])
    assert (root / "reports/index.html").stat().st_size > 1000
    assert {p.name.split("_")[0] for p in (root / "plots/images").glob("*.png")} == {
        "frontier", "forest", "quality", "cost", "timeseries"}


def test_status_clean_and_metrics_show_every_run(repro_project):
    """`dvc metrics show` lists each run's quality.json and cost.json and the verdict, the same figures as the
    full eval.json / train.json / comparison.json, which stay readable with `dvc metrics show <file>`."""
    root, _ = repro_project
    status = run(["dvc", "status"], root)
    assert "up to date" in status.stdout, status.stdout
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], root).stdout)[""]["data"]
    runs = "metrics/runs/tiny"
    assert set(shown) == {f"{runs}/baseline/quality.json", f"{runs}/lora-s42/quality.json",
                          f"{runs}/top_layer-s42/quality.json", f"{runs}/lora-s42/cost.json",
                          f"{runs}/top_layer-s42/cost.json", "metrics/verdict.json"}
    comparison = json.loads((root / "metrics/comparison.json").read_text())
    for run_id, method in (("baseline", "baseline"), ("lora-s42", "lora"), ("top_layer-s42", "top_layer")):
        full = json.loads((root / f"{runs}/{run_id}/eval.json").read_text())
        assert shown[f"{runs}/{run_id}/quality.json"]["data"] == {k: full[k] for k in QUALITY_KEYS}
        if method != "baseline":
            cost = shown[f"{runs}/{run_id}/cost.json"]["data"]
            train = json.loads((root / f"{runs}/{run_id}/train.json").read_text())
            assert cost["train_seconds"] == train["train_seconds"]
            assert "energy_wh" not in cost  # no energy counter on the CPU: null, which DVC does not show
            assert cost["peak_memory_mb"] == comparison["tiny"][method]["peak_memory_mb"] > 0  # one definition
    verdict = shown["metrics/verdict.json"]["data"]["tiny"]
    assert set(verdict) == {"best_f1", "front_train_seconds", "front_peak_memory_mb"}
    fronts = comparison["frontier"]["tiny"]
    assert verdict["front_train_seconds"] == (", ".join(fronts["train_seconds"]["front"]) or "none")
    full = json.loads(run(["dvc", "metrics", "show", "--json", "metrics/comparison.json"], root).stdout)
    assert full[""]["data"]["metrics/comparison.json"]["data"]["family"]["correction"] == "holm"
    plots = run(["dvc", "plots", "show", "--json"], root).stdout
    assert "train/loss.tsv" in plots and "Quality by run (test F1)" in plots and "quality_tiny.png" in plots


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


def test_exp_show_fits_under_the_documented_filter(repro_project):
    """The README's `dvc exp show --csv` filter prints DVC's row names and every declared metric, nothing else,
    within 40 columns; `--only-changed` then keeps only what moved between the commit and the experiment that
    test_exp_run_reruns_only_dependent_stages ran (top_layer retrained)."""
    root, _ = repro_project

    def header(*flags: str) -> list[str]:
        return run(["dvc", "exp", "show", "--csv", *flags], root).stdout.splitlines()[0].split(",")

    def measured(path: str) -> list[str]:  # DVC shows no column for a null (energy on the CPU)
        data = json.loads((root / path).read_text())
        return [k for k in metric_keys(path, ["tiny"]) if functools.reduce(dict.get, k.split("."), data) is not None]

    everything, shown = header(), header(*EXP_SHOW_FILTER)
    leaves = {path: measured(path) for path in declared_metrics(root)}
    assert shown[:len(KEPT_FIXED)] == list(KEPT_FIXED)
    assert sorted(shown[len(KEPT_FIXED):]) == sorted(expected_columns(leaves))
    assert len(shown) <= MAX_COLUMNS
    changed, changed_all = header("--only-changed", *EXP_SHOW_FILTER), header("--only-changed")
    assert "metrics/runs/tiny/top_layer-s42/cost.json:train_seconds" in changed and set(changed) <= set(shown)
    assert not any(c.startswith("metrics/runs/tiny/lora-s42/") for c in changed)  # not rerun: nothing moved
    assert "methods.top_layer.lr" in changed_all and len(changed_all) <= MAX_COLUMNS
    print(f"dvc exp show --csv: {len(everything)} columns, {len(shown)} filtered; --only-changed: "
          f"{len(changed_all)}, {len(changed)} filtered")


def test_metrics_and_plots_diff_between_two_commits(repro_project):
    """The pull-request view: commit a run, change a knob, commit again, diff the two commits."""
    root, _ = repro_project
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "before", "--allow-empty"], root)
    run(["dvc", "exp", "run", "-S", "methods.top_layer.lr=2e-3"], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "after"], root)

    metrics = json.loads(run(["dvc", "metrics", "diff", "HEAD~1", "HEAD", "--json"], root).stdout)
    assert "train_seconds" in metrics["metrics/runs/tiny/top_layer-s42/cost.json"]  # retrained
    assert "metrics/runs/tiny/lora-s42/cost.json" not in metrics  # not retrained: nothing moved
    every = json.loads(run(["dvc", "metrics", "diff", "HEAD~1", "HEAD", "--all", "--json"], root).stdout)
    assert set(every) == set(declared_metrics(root))  # quality and cost of every run, the verdict
    train = json.loads(run(["dvc", "metrics", "diff", "HEAD~1", "HEAD", "--json", "--targets",
                            "metrics/runs/tiny/top_layer-s42/train.json"], root).stdout)
    moved = train["metrics/runs/tiny/top_layer-s42/train.json"]  # the full record, on request
    assert moved["lr"]["old"] != moved["lr"]["new"] == pytest.approx(2e-3)

    plots = json.loads(run(["dvc", "plots", "diff", "HEAD~1", "HEAD", "--json"], root).stdout)
    flat = json.dumps(plots)
    for title in ("Quality by run (test F1)", "train/loss.tsv", "quality_tiny.png"):
        assert title in flat, title
    revisions = {rev for entries in plots["data"].values() for e in entries for rev in e.get("revisions", [])}
    assert revisions == {"HEAD~1", "HEAD"}, revisions  # both commits drawn, nothing else


def test_rerun_with_same_seed_is_identical(repro_project):
    """Determinism on the CPU: retraining and re-evaluating gives the same adapter bytes and metrics."""
    root, _ = repro_project
    before_lock = yaml.safe_load((root / "dvc.lock").read_text())
    before = json.loads((root / "metrics/runs/tiny/lora-s42/eval.json").read_text())
    run(["dvc", "repro", "-f", "-s", "train@tiny-lora-42"], root)
    run(["dvc", "repro", "-f", "-s", "evaluate@tiny-lora-42"], root)
    after_lock = yaml.safe_load((root / "dvc.lock").read_text())
    after = json.loads((root / "metrics/runs/tiny/lora-s42/eval.json").read_text())

    def adapter_md5(lock):
        outs = lock["stages"]["train@tiny-lora-42"]["outs"]
        return next(o["md5"] for o in outs if o["path"] == "models/tiny/lora-s42")

    assert adapter_md5(before_lock) == adapter_md5(after_lock)
    for metric in ("f1", "em", "bleu", "rouge1", "rouge2", "rougeL", "bertscore"):
        assert before[metric] == after[metric], metric
    assert before["ci95"] == after["ci95"]


def test_killed_training_resumes_from_checkpoint(dvc_project):
    """kill -9 mid-training, `dvc repro` again: it resumes and ends where an uninterrupted run ends."""
    from safetensors.torch import load_file

    root = dvc_project(**{"run.methods": ["lora"], "data.max_train": 24})
    stage = "train@tiny-lora-42"
    killed = run(["dvc", "repro", stage], root, check=False, env={"FTBENCH_KILL_AT_STEP": "2"})
    assert killed.returncode != 0
    assert (root / "checkpoints/tiny/lora-s42/state.pt").exists()
    assert not (root / "models/tiny/lora-s42").exists()  # nothing half-written
    run(["dvc", "repro", stage], root)
    resumed = json.loads((root / "metrics/runs/tiny/lora-s42/train.json").read_text())
    assert resumed["resumed_from_step"] == 2 and resumed["steps"] == 6
    assert not (root / "checkpoints/tiny/lora-s42/state.pt").exists()
    resumed_weights = load_file(root / "models/tiny/lora-s42/adapter_model.safetensors")

    run(["dvc", "repro", "-f", "-s", stage], root)  # the uninterrupted reference
    fresh = json.loads((root / "metrics/runs/tiny/lora-s42/train.json").read_text())
    assert fresh["resumed_from_step"] is None
    fresh_weights = load_file(root / "models/tiny/lora-s42/adapter_model.safetensors")
    assert resumed_weights.keys() == fresh_weights.keys()
    worst = max(float((resumed_weights[k] - fresh_weights[k]).abs().max()) for k in fresh_weights)
    print(f"resumed vs uninterrupted adapter: max |difference| = {worst:.3g}")
    assert worst <= 1e-6, f"resumed adapter differs from uninterrupted by {worst}"
    assert abs(resumed["final_loss"] - fresh["final_loss"]) <= 1e-5


def test_bring_your_own_alpaca_data_as_the_readme_says(dvc_project):
    """README "Bring your own data": a JSONL of {instruction, input, output} and one `dvc exp run`."""
    root = dvc_project(**{"run.methods": ["lora"]})
    records = [{"instruction": f"What was operation {i} code-named?",
                "input": f"Operation {i} began at dawn. It was code-named Falcon-{i * 7}.", "output": f"Falcon-{i * 7}"}
               for i in range(40)]
    (root / "data/raw/my_qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    run(["dvc", "exp", "run", "-S", "data.format=alpaca", "-S", "data.raw=data/raw/my_qa.jsonl"], root)
    data = json.loads((root / "metrics/data.json").read_text())
    assert data["documents"] == 40 and data["qa_pairs"] == 40 and data["answers_in_context"] == 40
    test_rows = [json.loads(line) for line in (root / "data/processed/test.jsonl").read_text().splitlines()]
    assert test_rows and all(r["output"].startswith("Falcon-") for r in test_rows)
    evaluated = json.loads((root / "metrics/runs/tiny/lora-s42/eval.json").read_text())
    assert evaluated["n"] == len(test_rows)
