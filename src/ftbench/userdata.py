"""Bring your own data: a user's Alpaca JSON/JSONL of ``{instruction, input, output}`` records.

Read and validated by the translate stage (``data.format: alpaca``); kept apart from ``alpaca.py``, which
every model stage imports, so that a change here reruns only translate and what its output feeds.

Splits the user already has are kept as given (as LLaMA-Factory's ``dataset`` / ``eval_dataset`` keep
them): ``data.raw`` may be a folder of ``train`` / ``validation`` / ``test`` files, or each record may carry
a ``split`` field. Contexts found in two splits are leakage and stop the run unless allowed knowingly.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

from ftbench.io import DataError, read_json_file, read_text_file

#: File stems of a user's split folder, per split, as LLaMA-Factory users and HF datasets name them;
#: each may be .json or .jsonl. The same names are accepted as values of a record's ``split`` field.
SPLIT_NAMES = {"train": ("train",), "validation": ("validation", "valid", "val", "dev", "eval"), "test": ("test",)}
_SPLIT_OF = {name: split for split, names in SPLIT_NAMES.items() for name in names}


def load_alpaca(path: str | Path, encoding: str = "utf-8") -> list[dict]:
    """Read a user's Alpaca file (a JSON list, or JSONL with one record a line) and validate it.

    Each record needs a non-empty string ``instruction`` and ``output``; ``input`` is optional.
    """
    return [rec for rec, _ in _read_records(Path(path), encoding)]


def _read_records(path: Path, encoding: str) -> list[tuple[dict, str]]:
    """Validated records of one file with where each is (``file line n`` / ``file record i (id x)``)."""
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
    ids = [f" (id {r['id']})" if isinstance(r, dict) and "id" in r else "" for r in records]
    where = [w + i for w, i in zip(where, ids, strict=True)]
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
    return list(zip(records, where, strict=True))


def alpaca_documents(records: list[dict], splits: list[str] | None = None) -> list[dict]:
    """Group records into documents by ``doc_id`` or by identical ``input``.

    Pairs asked about one context stay in one split, as CMNEE pairs of one document do. With ``splits``
    (the user's own, one per record) each document carries its ``split``; a context allowed in two splits
    (``data.allow_split_overlap``) becomes one document per split, its id suffixed with the split.
    """
    docs: dict[tuple[str | None, str], dict] = {}
    for i, rec in enumerate(records):
        split = splits[i] if splits else None
        # A record without a context is its own document (keyed by its question, as the overlap check keys
        # it): hashing the empty input would make every such record one document, and the document is the
        # unit the split and the statistics resample.
        context = rec.get("input") or f"\0{' '.join(rec['instruction'].split())}"
        key = str(rec.get("doc_id") or hashlib.sha1(context.encode()).hexdigest()[:12])
        doc = docs.setdefault((split, key), {"id": key, "text_en": rec.get("input", ""), "pairs": []})
        if split:
            doc["split"] = split
        doc["pairs"].append({
            "id": str(rec.get("id", f"r{i}")), "doc_id": key, "event_type": rec.get("event_type", "alpaca"),
            "role": rec.get("role", "answer"), "instruction": rec["instruction"].strip(),
            "input": rec.get("input", ""), "output": rec["output"].strip(),
            "answer_in_context": rec["output"].strip() in rec.get("input", ""),
        })
    in_splits = Counter(key for _, key in docs)
    for (split, key), doc in docs.items():
        if in_splits[key] > 1:
            doc["id"] = f"{key}-{split}"
            for pair in doc["pairs"]:
                pair["doc_id"] = doc["id"]
    return list(docs.values())


def _split_files(folder: Path) -> dict[str, Path]:
    """The folder's split files; train and test are required, validation is optional."""
    found: dict[str, Path] = {}
    for split, stems in SPLIT_NAMES.items():
        files = [folder / f"{stem}{ext}" for stem in stems for ext in (".json", ".jsonl")
                 if (folder / f"{stem}{ext}").is_file()]
        if len(files) > 1:
            raise DataError(f"{folder}: {' and '.join(f.name for f in files)} are both {split} files",
                            fix="keep one file per split")
        if files:
            found[split] = files[0]
    for split in ("train", "test"):
        if split not in found:
            raise DataError(f"{folder}: no {split} file ({split}.json or {split}.jsonl)",
                            fix="give the folder train, test and optionally validation (valid/val/dev) files, "
                                "or point data.raw at one file to have it split")
    return found


def _split_field(rec: dict, where: str) -> str | None:
    value = rec.get("split")
    if value is None:
        return None
    if not isinstance(value, str) or value not in _SPLIT_OF:
        raise DataError(f"{where}: unknown split {value!r}", fix="use train, validation (or valid/val/dev) or test")
    return _SPLIT_OF[value]


def load_user_data(path: str | Path, encoding: str = "utf-8") -> list[tuple[dict, str, str | None]]:
    """(record, where, split) of a user's file or split folder; split is None when the data brings none.

    In a folder, a record's own ``split`` field must agree with its file. In one file, either every
    record has a ``split`` field or none does (then the pipeline splits by context, seeded).
    """
    path = Path(path)
    if path.is_dir():
        out = []
        for split, file in _split_files(path).items():
            for rec, where in _read_records(file, encoding):
                if _split_field(rec, where) not in (None, split):
                    raise DataError(f"{where}: split {rec['split']!r} but the record is in the {split} file",
                                    fix="remove the split field or move the record to its file")
                out.append((rec, where, split))
        return out
    rows = [(rec, where, _split_field(rec, where)) for rec, where in _read_records(path, encoding)]
    given = [r for r in rows if r[2] is not None]
    if given and len(given) < len(rows):
        where = next(w for _, w, s in rows if s is None)
        raise DataError(f"{where}: no 'split' field, while other records of {path} have one",
                        fix="give every record a split (train, validation or test), or none")
    return rows


def check_split_overlap(rows: list[tuple[dict, str, str | None]], allow: bool) -> dict:
    """Stop when one context (``input``; the ``instruction`` for records without one) or one ``doc_id``
    appears in two splits: a test question whose context was trained on measures memory, not skill.

    With ``allow`` (``data.allow_split_overlap: true``) the overlap is kept and counted instead.
    """
    first: dict[tuple[str, str], tuple[str, str]] = {}
    clashes: list[tuple[str, str, str, str, str]] = []
    records, contexts = set(), set()
    for rec, where, split in rows:
        keys = [("context", " ".join((rec.get("input") or rec["instruction"]).split()))]
        if rec.get("doc_id") is not None:
            keys.append(("doc_id", str(rec["doc_id"])))
        for key in keys:
            seen = first.setdefault(key, (split, where))
            if seen[0] != split:
                clashes.append((key[0], seen[1], seen[0], where, split))
                records.update((seen[1], where))
                contexts.add(key)
    if clashes and not allow:
        kind, a, split_a, b, split_b = clashes[0]
        more = f"; {len(records)} records are in two splits in all" if len(records) > 2 else ""
        raise DataError(f"{a} ({split_a}) and {b} ({split_b}) have the same {kind.replace('_', ' ')}{more}",
                        fix="move them into one split or remove one, or set data.allow_split_overlap: true to "
                            "keep them knowingly")
    return {"contexts": len(contexts), "records": len(records)}
