"""A user's own train/validation/test splits (a folder of files, or a ``split`` field per record) are used as
given, through the real translate and format stages; a context in two splits stops the run naming both records,
unless ``data.allow_split_overlap`` keeps it knowingly (and counted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO

OUTPUTS = ["data/interim/translated.jsonl", "data/interim/translate_stats.json"]


def _record(i: int, split: str | None = None, **extra) -> dict:
    rec = {"id": f"q{i}", "instruction": f"What was operation {i} code-named?",
           "input": f"Operation {i} began at dawn. It was code-named Falcon-{i}.", "output": f"Falcon-{i}", **extra}
    return {**rec, "split": split} if split else rec


def _write(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        path.write_text(json.dumps(records, indent=1))


def _project(tmp_path: Path, raw: str, **data) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update({"format": "alpaca", "raw": raw, "max_train": None, "max_eval": None, **data})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))


def _stage(tmp_path: Path, name: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / f"stages/{name}.py")], cwd=tmp_path, capture_output=True,
                          text=True)


def _run(tmp_path: Path) -> tuple[dict, dict[str, list[dict]]]:
    for name in ("translate", "format"):
        proc = _stage(tmp_path, name)
        assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads((tmp_path / "metrics/data.json").read_text())
    rows = {s: [json.loads(line) for line in (tmp_path / f"data/processed/{s}.jsonl").read_text().splitlines()]
            for s in ("train", "validation", "test")}
    return data, rows


def _ids(rows: dict[str, list[dict]]) -> dict[str, list[str]]:
    return {s: sorted(r["id"] for r in split) for s, split in rows.items()}


def test_split_folder_is_used_as_given(tmp_path):
    folder = tmp_path / "data/raw/mine"
    _write(folder / "train.jsonl", [_record(i) for i in range(6)])
    _write(folder / "valid.json", [_record(i) for i in (6, 7)])  # LLaMA-Factory style name, a JSON list
    _write(folder / "test.jsonl", [_record(i) for i in (8, 9, 10)])
    _project(tmp_path, "data/raw/mine", split={"validation": 0.5, "test": 0.3})  # fractions are not used
    data, rows = _run(tmp_path)
    assert _ids(rows) == {"train": [f"q{i}" for i in range(6)], "validation": ["q6", "q7"],
                          "test": ["q10", "q8", "q9"]}
    assert all(r["output"] in r["input"] for split in rows.values() for r in split)
    assert {s: v["qa_pairs"] for s, v in data["splits"].items()} == {"train": 6, "validation": 2, "test": 3}
    assert data["split_overlap"] == {"contexts": 0, "records": 0}


def test_split_field_per_record_is_used_as_given_and_validation_may_be_absent(tmp_path):
    records = [_record(i, "train") for i in range(5)] + [_record(5, "test"), _record(6, "test")]
    _write(tmp_path / "data/raw/mine.json", records)
    _project(tmp_path, "data/raw/mine.json")
    data, rows = _run(tmp_path)
    assert _ids(rows) == {"train": [f"q{i}" for i in range(5)], "validation": [], "test": ["q5", "q6"]}
    assert data["split_overlap"] == {"contexts": 0, "records": 0}
    # 'dev' is read as validation, as LLaMA-Factory users name it
    _write(tmp_path / "data/raw/mine.json", [*records, _record(7, "dev")])
    assert _ids(_run(tmp_path)[1])["validation"] == ["q7"]


def test_one_file_without_split_fields_is_still_split_by_context(tmp_path):
    _write(tmp_path / "data/raw/mine.jsonl", [_record(i) for i in range(40)])
    _project(tmp_path, "data/raw/mine.jsonl")
    data, rows = _run(tmp_path)
    assert sum(len(r) for r in rows.values()) == 40 and rows["test"] and "split_overlap" not in data


def _fails(tmp_path: Path, *expected: str) -> str:
    """translate stops with one line naming the records, leaving the previous outputs and nothing else."""
    for out in OUTPUTS:
        (tmp_path / out).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / out).write_text(f"previous {out}\n")
    proc = _stage(tmp_path, "translate")
    assert proc.returncode == 2, proc.stderr[-2000:]
    message = proc.stderr.strip().splitlines()[-1]
    assert message.startswith("error: ") and "Traceback" not in proc.stderr and "Fix:" in message, proc.stderr
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"
    for out in OUTPUTS:
        assert (tmp_path / out).read_text() == f"previous {out}\n"
    assert sorted(p.name for p in (tmp_path / "data/interim").iterdir()) == sorted(Path(o).name for o in OUTPUTS)
    return message


def test_context_in_two_split_files_is_an_error_naming_both_records(tmp_path):
    folder = tmp_path / "data/raw/mine"
    _write(folder / "train.jsonl", [_record(i) for i in range(4)])
    leaked = {**_record(2), "id": "t9", "instruction": "When did operation 2 begin?", "output": "at dawn"}
    _write(folder / "test.json", [_record(8), leaked])
    _project(tmp_path, "data/raw/mine")
    message = _fails(tmp_path, "train.jsonl line 3 (id q2) (train)", "test.json record 1 (id t9) (test)",
                     "same context", "data.allow_split_overlap: true")
    assert "records are in two splits" not in message  # just the one pair


def test_shared_doc_id_across_split_fields_is_an_error(tmp_path):
    records = [_record(0, "train", doc_id="report-7"), _record(1, "test", doc_id="report-7"), _record(2, "test")]
    _write(tmp_path / "data/raw/mine.jsonl", records)
    _project(tmp_path, "data/raw/mine.jsonl")
    _fails(tmp_path, "line 1 (id q0) (train)", "line 2 (id q1) (test)", "same doc id")


def test_overlap_allowed_knowingly_is_kept_and_counted(tmp_path):
    folder = tmp_path / "data/raw/mine"
    _write(folder / "train.jsonl", [_record(i) for i in range(4)])
    _write(folder / "test.jsonl", [_record(2), _record(3), _record(9)])
    _project(tmp_path, "data/raw/mine", allow_split_overlap=True)
    data, rows = _run(tmp_path)
    assert data["split_overlap"] == {"contexts": 2, "records": 4}
    assert _ids(rows) == {"train": ["q0", "q1", "q2", "q3"], "validation": [], "test": ["q2", "q3", "q9"]}
    train_docs, test_docs = ({r["doc_id"] for r in rows[s]} for s in ("train", "test"))
    assert not train_docs & test_docs  # one document per split, so format's by-document bookkeeping holds


@pytest.mark.parametrize(("files", "expected"), [
    ({"train.jsonl": [_record(0)]}, ["no test file", "valid/val/dev"]),
    ({"train.jsonl": [_record(0)], "test.jsonl": [_record(1)], "valid.json": [_record(2)], "dev.jsonl": [_record(3)]},
     ["valid.json and dev.jsonl are both validation files"]),
    ({"train.jsonl": [_record(0, "test")], "test.jsonl": [_record(1)]},
     ["train.jsonl line 1 (id q0)", "split 'test' but the record is in the train file"]),
])
def test_bad_split_folders(tmp_path, files, expected):
    for name, records in files.items():
        _write(tmp_path / "data/raw/mine" / name, records)
    _project(tmp_path, "data/raw/mine")
    _fails(tmp_path, *expected)


@pytest.mark.parametrize(("records", "expected"), [
    ([_record(0, "train"), _record(1)], ["record 1 (id q1)", "no 'split' field", "or none"]),
    ([_record(0, "train"), _record(1, "holdout")], ["record 1 (id q1)", "unknown split 'holdout'"]),
])
def test_bad_split_fields(tmp_path, records, expected):
    _write(tmp_path / "data/raw/mine.json", records)
    _project(tmp_path, "data/raw/mine.json")
    _fails(tmp_path, *expected)
