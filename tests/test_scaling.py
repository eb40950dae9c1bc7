"""Scaling out with DVC's own engines, on the tiny Llama: parallel experiments through the queue, and a shared
remote (a local directory as DVC remote, a bare repository as git remote) that a fresh clone pulls from.

One `dvc repro` is shared by every test (module fixture). The scratch project gets this repository's
.gitignore before it runs, so a clone sees exactly what a clone of this repository sees: git-ignored outputs
travel only through the DVC remote, or not at all."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, make_project, run

MODEL_DIR = "models/tiny/lora-s42"
VARIANTS = {"lr-high": "5e-2", "lr-low": "1e-5"}  # far apart, so the training loss differs
QUEUE_TIMEOUT_S = 900


@pytest.fixture(scope="module")
def origin(tmp_path_factory, tiny_llama):
    """A project after `dvc repro` + commit, pushed to a git remote (``origin``) and a DVC remote (``shared``)."""
    tmp = tmp_path_factory.mktemp("scaling")
    root = make_project(tmp / "project", tiny_llama, **{"run.methods": ["lora"]})
    shutil.copy(REPO / ".gitignore", root / ".gitignore")
    run(["git", "init", "-q", "--bare", str(tmp / "origin.git")], tmp)
    run(["git", "remote", "add", "origin", str(tmp / "origin.git")], root)
    run(["dvc", "remote", "add", "-d", "shared", str(tmp / "dvc-remote")], root)
    run(["dvc", "repro"], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "repro"], root)
    run(["dvc", "push"], root)
    run(["git", "push", "-q", "origin", "HEAD"], root)
    return root


def _clone(origin: Path, into: Path) -> Path:
    branch = run(["git", "rev-parse", "--abbrev-ref", "HEAD"], origin).stdout.strip()
    run(["git", "clone", "-q", "--branch", branch, str(origin.parent / "origin.git"), str(into)], origin.parent)
    return into


def _digests(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file() and p.name != ".gitignore"}


@pytest.fixture(scope="module")
def clone(origin):
    """A fresh clone of ``origin`` after `dvc pull`."""
    root = _clone(origin, origin.parent / "clone")
    run(["dvc", "pull"], root)
    return root


def test_fresh_clone_pull_restores_the_models(origin, clone):
    assert _digests(clone / MODEL_DIR) == _digests(origin / MODEL_DIR) != {}
    assert (clone / "predictions/tiny/lora-s42.jsonl").read_bytes() == \
        (origin / "predictions/tiny/lora-s42.jsonl").read_bytes()


def test_fresh_clone_repro_retrains_nothing(origin, clone):
    """Everything a stage wrote is in git or in the remote (checkpoint markers, translation cache too), so a
    plain `dvc repro` in the clone finds every stage up to date."""
    proc = run(["dvc", "repro"], clone)
    ran = [line for line in proc.stdout.splitlines() if line.startswith("Running stage")]
    assert not ran, f"a fresh clone after dvc pull reran {ran}:\n{proc.stdout[-3000:]}"
    assert "Stage 'train@tiny-lora-42' didn't change, skipping" in proc.stdout
    assert _digests(clone / MODEL_DIR) == _digests(origin / MODEL_DIR)


def test_fresh_clone_status_is_clean(clone):
    status = run(["dvc", "status"], clone).stdout
    assert "Data and pipelines are up to date" in status, status


def _logs(root: Path, names: list[str]) -> str:
    return "\n".join(f"--- dvc queue logs {n}\n" + run(["dvc", "queue", "logs", n], root, check=False).stdout[-3000:]
                     for n in names)


def _queue_wait(root: Path, names: list[str]) -> str:
    """Poll `dvc queue status` until no task is queued or running; the last status table."""
    deadline = time.monotonic() + QUEUE_TIMEOUT_S
    while True:
        status = run(["dvc", "queue", "status"], root).stdout
        tasks = [line for line in status.splitlines() if any(f" {n} " in f" {line} " for n in names)]
        if len(tasks) == len(names) and not any(s in line for line in tasks for s in ("Queued", "Running")):
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"queue not done after {QUEUE_TIMEOUT_S} s:\n{status}\n{_logs(root, names)}")
        time.sleep(3)


def _numbers(tree: dict) -> list[float]:
    return [x for v in tree.values() for x in (_numbers(v) if isinstance(v, dict) else [v])
            if isinstance(x, int | float) and not isinstance(x, bool)]


@pytest.fixture(scope="module")
def queued(origin):
    """Two lr variants queued and run by two parallel queue workers; the workers are stopped afterwards."""
    for name, lr in VARIANTS.items():
        run(["dvc", "exp", "run", "--queue", "-S", f"train.lr={lr}", "-n", name], origin)
    try:
        run(["dvc", "queue", "start", "--jobs", "2"], origin)
        status = _queue_wait(origin, list(VARIANTS))
    finally:
        run(["dvc", "queue", "stop", "--kill"], origin, check=False)
    failed = [n for n in VARIANTS if not any(n in line and "Success" in line for line in status.splitlines())]
    if failed:
        raise AssertionError(f"queued experiments {failed} did not succeed:\n{status}\n{_logs(origin, failed)}")
    return origin


def _experiments(root: Path) -> dict[str, dict]:
    """``dvc exp show --json`` data of each queued variant, by name."""
    shown = json.loads(run(["dvc", "exp", "show", "--json"], root).stdout)
    return {e["name"]: e["revs"][0]["data"] for row in shown for e in row.get("experiments") or []
            if e.get("name") in VARIANTS}


def test_queue_runs_two_variants_in_parallel_and_exp_show_lists_both(queued):
    exps = _experiments(queued)
    assert set(exps) == set(VARIANTS), f"dvc exp show lists {sorted(exps)}"
    losses = {}
    for name, data in exps.items():
        assert float(data["params"]["params.yaml"]["data"]["train"]["lr"]) == float(VARIANTS[name])
        metrics = {path: m["data"] for path, m in data["metrics"].items() if "error" not in m}
        assert metrics and _numbers(metrics), f"experiment {name} shows no metric values: {data['metrics']}"
        # the loss is a plain output, not a declared metric: read it from the experiment's own commit
        train = run(["git", "show", f"{data['rev']}:metrics/runs/tiny/lora-s42/train.json"], queued).stdout
        losses[name] = json.loads(train)["final_loss"]
    assert losses["lr-high"] != losses["lr-low"], losses


def test_exp_push_and_pull_move_an_experiment_with_its_model(queued, tmp_path):
    expected = _experiments(queued)["lr-high"]["outs"][MODEL_DIR]["hash"]
    assert expected != _model_md5(yaml.safe_load(run(["git", "show", "HEAD:dvc.lock"], queued).stdout))
    run(["dvc", "exp", "push", "origin", "lr-high"], queued)  # git refs to origin, its outputs to the DVC remote
    other = _clone(queued, tmp_path / "other")
    run(["dvc", "exp", "pull", "origin", "lr-high"], other)
    run(["dvc", "exp", "apply", "lr-high"], other)
    assert float(yaml.safe_load((other / "params.yaml").read_text())["train"]["lr"]) == float(VARIANTS["lr-high"])
    assert _model_md5(yaml.safe_load((other / "dvc.lock").read_text())) == expected
    listing = json.loads(_cache_object(other, expected).read_text())  # the .dir object: every file's md5
    assert _digests(other / MODEL_DIR) == {e["relpath"]: e["md5"] for e in listing}


def _cache_object(root: Path, md5: str) -> Path:
    return root / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]


def _model_md5(lock: dict) -> str:
    return next(o["md5"] for o in lock["stages"]["train@tiny-lora-42"]["outs"] if o["path"] == MODEL_DIR)
