"""Each malformed input, fed to the real stage: a non-zero exit, one message naming the file, the
record and the fix, and the previous outputs left exactly as they were."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO

GOOD_DOC = {"id": "d1", "text": "3月5日，美国海军在太平洋试射了新型导弹。", "event_list": [
    {"event_type": "Experiment", "trigger": {"text": "试射", "offset": [13, 15]}, "arguments": [
        {"role": "Subject", "text": "美国海军", "offset": [5, 9]},
        {"role": "Location", "text": "太平洋", "offset": [10, 13]},
        {"role": "Equipment", "text": "新型导弹", "offset": [16, 20]},
        {"role": "Date", "text": "3月5日", "offset": [0, 4]}]}], "coref_arguments": []}
MEMORY = {"3月5日，美国海军在太平洋试射了新型导弹。":
          "On March 5, the US Navy test-fired a new missile in the Pacific.",
          "试射": "test-fired", "美国海军": "the US Navy", "太平洋": "the Pacific", "新型导弹": "a new missile",
          "3月5日": "March 5"}
OUTPUTS = ["data/interim/translated.jsonl", "data/interim/translate_stats.json"]


def _doc(**changes):
    doc = json.loads(json.dumps(GOOD_DOC))
    for path, value in changes.items():
        target = doc
        keys = path.split("/")
        for k in keys[:-1]:
            target = target[int(k) if k.isdigit() else k]
        last = int(keys[-1]) if keys[-1].isdigit() else keys[-1]
        if value is DELETE:
            del target[last]
        else:
            target[last] = value
    return doc


DELETE = object()
ARG = "event_list/0/arguments/0"

# name -> (raw file content (str or bytes or JSON-able), params changes, expected message parts)
CASES = {
    "truncated_json": ('[{"id": "d1", "text": "美国', {}, ["cmnee.json", "invalid JSON at line 1", "truncated"]),
    "top_level_object": (GOOD_DOC, {}, ["cmnee.json", "expected a JSON list", "top-level list"]),
    "list_instead_of_document": ([[GOOD_DOC]], {}, ["record 0", "expected a document object, got list"]),
    "missing_text": ([_doc(text=DELETE)], {}, ["record 0 (id d1)", "missing field 'text'", "add 'text'"]),
    "missing_event_list": ([_doc(event_list=DELETE)], {}, ["record 0 (id d1)", "missing field 'event_list'"]),
    "event_list_not_list": ([_doc(event_list={"a": 1})], {}, ["event_list must be a list"]),
    "event_is_list": ([_doc(**{"event_list/0": ["x"]})], {}, ["event 0", "expected an event object"]),
    "missing_trigger": ([_doc(**{"event_list/0/trigger": DELETE})], {}, ["event 0", "missing field 'trigger'"]),
    "missing_argument_role": ([_doc(**{f"{ARG}/role": DELETE})], {}, ["event 0 argument 0", "missing field 'role'"]),
    "offset_out_of_range": ([_doc(**{f"{ARG}/offset": [50, 54]})], {}, ["event 0", "out of range", "index this"]),
    "offset_reversed": ([_doc(**{f"{ARG}/offset": [9, 5]})], {}, ["argument 0", "is not a span", "text[start:end]"]),
    "offset_not_pair": ([_doc(**{f"{ARG}/offset": [5]})], {}, ["argument 0", "is not [start, end]", "two integers"]),
    "empty_text": ([_doc(text="  ")], {}, ["record 0 (id d1)", "empty document text"]),
    "empty_answer": ([_doc(**{f"{ARG}/text": ""})], {}, ["argument 0", "empty span text", "remove the argument"]),
    "non_utf8_bytes": (b'[{"id": "d1", "text": "\xff\xfe\xba"}]', {}, ["cmnee.json", "not valid utf-8", "gb18030"]),
    "duplicate_ids": ([GOOD_DOC, GOOD_DOC], {}, ["record 1", "duplicate id 'd1'", "unique id"]),
    "unknown_event_type": ([_doc(**{"event_list/0/event_type": "Parade"})], {}, ["event 0", "unknown event type",
                                                                                "Experiment"]),
    "unknown_role": ([_doc(**{f"{ARG}/role": "Weapon"})], {}, ["argument 0", "'Weapon' is not a role of Experiment",
                                                              "Equipment"]),
    "untranslatable_segment": ([_doc(text=GOOD_DOC["text"] + "新的句子。")], {}, ["could not be translated",
                                                                               "新的句子", "translation memory"]),
    "unknown_backend": ([GOOD_DOC], {"translate.backends": ["memory", "google"]},
                        ["params.yaml", "unknown translation backend 'google'"]),
    "unknown_model": ([GOOD_DOC], {"run.models": ["llama-9b"]}, ["params.yaml", "unknown model 'llama-9b'"]),
    "unknown_method": ([GOOD_DOC], {"run.methods": ["lora", "prefix"]}, ["params.yaml", "unknown method 'prefix'"]),
    "method_key_typo": ([GOOD_DOC], {"methods.lora.rank": 8}, ["params.yaml", "methods.lora has unknown key 'rank'",
                                                             "did you mean 'r'"]),
    "missing_raw_file": (None, {}, ["cmnee.json: file not found", "data.raw"]),
    "alpaca_missing_output": ([{"instruction": "Q", "input": "c"}], {"data.format": "alpaca"},
                              ["record 0", "missing field 'output'"]),
    "alpaca_jsonl_bad_line": ('{"instruction": "Q", "output": "a"}\n{"instruction": \n', {"data.format": "alpaca"},
                              ["line 2", "invalid JSON", "one JSON object per line"]),
    "alpaca_empty_output": ([{"instruction": "Q", "output": " "}], {"data.format": "alpaca"},
                            ["record 0", "'output' must be a non-empty string"]),
}


def _set(params: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for p in parents:
        params = params.setdefault(p, {})
    params[last] = value


def _project(tmp_path: Path, content, changes: dict) -> None:
    """The scratch project every case runs in: the raw file, the memory and params.yaml."""
    alpaca_jsonl = changes.get("data.format") == "alpaca" and isinstance(content, str)
    raw = tmp_path / "data/raw" / ("user.jsonl" if alpaca_jsonl else "cmnee.json")
    raw.parent.mkdir(parents=True)
    if isinstance(content, bytes):
        raw.write_bytes(content)
    elif isinstance(content, str):
        raw.write_text(content, encoding="utf-8")
    elif content is not None:
        raw.write_text(json.dumps(content, ensure_ascii=False), encoding="utf-8")
    (tmp_path / "data/raw/memory.json").write_text(json.dumps(MEMORY, ensure_ascii=False), encoding="utf-8")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    _set(params, "data.raw", str(raw.relative_to(tmp_path)))
    _set(params, "translate.memory", "data/raw/memory.json")
    _set(params, "translate.backends", ["memory"])
    for key, value in changes.items():
        _set(params, key, value)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))


def _translate(tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "stages/translate.py")], cwd=tmp_path, capture_output=True,
                          text=True)


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_fails_cleanly_and_keeps_previous_outputs(case, tmp_path):
    content, changes, expected = CASES[case]
    _project(tmp_path, content, changes)
    previous = {}
    for out in OUTPUTS:  # what an earlier good run left: must survive the failed one untouched
        (tmp_path / out).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / out).write_text(f"previous {out}\n")
        previous[out] = (tmp_path / out).read_text()

    proc = _translate(tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    message = proc.stderr.strip().splitlines()[-1]
    assert message.startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"
    assert "Fix:" in message
    for out, text in previous.items():
        assert (tmp_path / out).read_text() == text
    leftovers = [p.name for p in (tmp_path / "data/interim").iterdir() if p.name not in {Path(o).name for o in OUTPUTS}]
    assert not leftovers, f"temporary files left behind: {leftovers}"


def test_good_input_passes_the_same_harness(tmp_path):
    """The harness itself can pass: the unmodified record translates, over the previous outputs."""
    _project(tmp_path, [GOOD_DOC], {})
    for out in OUTPUTS:
        (tmp_path / out).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / out).write_text(f"previous {out}\n")
    proc = _translate(tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = json.loads((tmp_path / "data/interim/translated.jsonl").read_text())
    assert row["events"][0]["arguments"][2]["en"] == "a new missile"
    assert json.loads((tmp_path / "data/interim/translate_stats.json").read_text())["documents"] == 1


# A bad numeric knob stops the stage when params.yaml is read, before any input is touched.
PARAM_CASES = {
    "param_batch_size_word": ([GOOD_DOC], {"train.batch_size": "eight"},
                              ["params.yaml: train.batch_size is 'eight' (a string)", "use a positive integer"]),
    "param_epochs_negative": ([GOOD_DOC], {"train.epochs": -1}, ["params.yaml: train.epochs is -1", "> 0"]),
    "param_translate_batch_size_zero": ([GOOD_DOC], {"translate.batch_size": 0},
                                        ["params.yaml: translate.batch_size is 0", "e.g. 16"]),
    "param_bool_as_int": ([GOOD_DOC], {"train.completion_only_loss": 1},
                          ["train.completion_only_loss is 1 (an integer)", "true or false"]),
}
CASES.update(PARAM_CASES)


@pytest.mark.parametrize("case", sorted(PARAM_CASES))
def test_bad_param_fails_cleanly_and_keeps_previous_outputs(case, tmp_path):
    test_bad_input_fails_cleanly_and_keeps_previous_outputs(case, tmp_path)


def test_stage_main_freezes_the_heap_before_and_after_the_stage():
    """``stage.main`` hands what is alive to the permanent generation before the stage runs (imports) and after
    it (what the stage built, which the exit would otherwise walk); an error still exits with code 2. Run in a
    subprocess: ``main`` also sets loggers and the collector for the whole process."""
    code = """
import gc, sys
from ftbench.io import ConfigError
from ftbench.stage import main
gc.unfreeze()
seen, built = {}, []
def stage():
    seen["before"] = gc.get_freeze_count()
    built.extend([[i] for i in range(10_000)])  # objects the stage makes, tracked by the collector
main(stage)
print(seen["before"] > 0, gc.get_freeze_count() >= seen["before"] + len(built))
def failing():
    raise ConfigError("bad knob", fix="set it right")
main(failing)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "True True"
    assert "bad knob" in proc.stderr
