"""Bring your own data: a user's Alpaca JSON/JSONL of ``{instruction, input, output}`` records.

Read and validated by the translate stage (``data.format: alpaca``); kept apart from ``alpaca.py``, which
every model stage imports, so that a change here reruns only translate and what its output feeds.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ftbench.io import DataError, read_json_file, read_text_file


def load_alpaca(path: str | Path, encoding: str = "utf-8") -> list[dict]:
    """Read a user's Alpaca file (a JSON list, or JSONL with one record a line) and validate it.

    Each record needs a non-empty string ``instruction`` and ``output``; ``input`` is optional.
    """
    path = Path(path)
    if path.suffix == ".jsonl":
        records, where = [], []
        for n, line in enumerate(read_text_file(path, encoding).splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataError(f"{path} line {n}: invalid JSON ({e.msg})",
                                fix="one JSON object per line; repair or remove that line") from None
            where.append(f"{path} line {n}")
    else:
        records = read_json_file(path, encoding)
        if not isinstance(records, list):
            raise DataError(f"{path}: expected a JSON list of {{instruction, input, output}} records, "
                            f"got {type(records).__name__}", fix="wrap the records in [ ... ] or use .jsonl")
        where = [f"{path} record {i}" for i in range(len(records))]
    for rec, w in zip(records, where, strict=True):
        if not isinstance(rec, dict):
            raise DataError(f"{w}: expected an object, got {type(rec).__name__}",
                            fix='write it as {"instruction": ..., "input": ..., "output": ...}')
        for key in ("instruction", "output"):
            if key not in rec:
                raise DataError(f"{w}: missing field '{key}'", fix=f"add '{key}' (a non-empty string)")
            if not isinstance(rec[key], str) or not rec[key].strip():
                raise DataError(f"{w}: '{key}' must be a non-empty string", fix=f"give the {key} text")
        if not isinstance(rec.get("input", ""), str):
            raise DataError(f"{w}: 'input' must be a string", fix="give the context as text, or leave it out")
    if not records:
        raise DataError(f"{path}: no records", fix="the file must hold at least one {instruction, output} record")
    return records


def alpaca_documents(records: list[dict]) -> list[dict]:
    """Group records into documents by ``doc_id`` or by identical ``input``.

    Pairs asked about one context stay in one split, as CMNEE pairs of one document do.
    """
    docs: dict[str, dict] = {}
    for i, rec in enumerate(records):
        key = str(rec.get("doc_id") or hashlib.sha1(rec.get("input", "").encode()).hexdigest()[:12])
        doc = docs.setdefault(key, {"id": key, "text_en": rec.get("input", ""), "pairs": []})
        doc["pairs"].append({
            "id": str(rec.get("id", f"r{i}")), "doc_id": key, "event_type": rec.get("event_type", "alpaca"),
            "role": rec.get("role", "answer"), "instruction": rec["instruction"].strip(),
            "input": rec.get("input", ""), "output": rec["output"].strip(),
            "answer_in_context": rec["output"].strip() in rec.get("input", ""),
        })
    return list(docs.values())
