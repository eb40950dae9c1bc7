"""Small I/O helpers shared by every stage: clear input errors and atomic writes.

Every output is written to a temporary sibling and renamed into place, so a stage that dies
midway leaves the previous output intact and never a half-written file.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


class FtbenchError(Exception):
    """An error the user can fix: printed as one line by the stages, without a traceback."""

    def __init__(self, message: str, fix: str | None = None):
        self.message = message
        self.fix = fix
        super().__init__(f"{message}. Fix: {fix}" if fix else message)


class DataError(FtbenchError):
    """Malformed input data: the message names the file and the record."""


class ConfigError(FtbenchError):
    """A bad value in params.yaml."""


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once, at import (single-threaded): os.umask can only be read by setting it, which is racy once
# threads (the resource monitor) create files.
_UMASK = _read_umask()


def _tmp_sibling(path: Path, suffix: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp's 0600 would make outputs private to their writer
    return Path(tmp)


def write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    tmp = _tmp_sibling(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    tmp = _tmp_sibling(path)
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_json(path: str | Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)
    try:
        yield tmp
        old = path.with_name(f".{path.name}.old")
        if old.exists():
            shutil.rmtree(old)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def dir_size_bytes(path: str | Path) -> int:
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def read_text_file(path: str | Path, encoding: str = "utf-8", *, fix: str | None = None) -> str:
    """Decode a user's input file, naming the file and byte offset when the encoding is wrong.

    UTF-8 files may start with a BOM; ``encoding="gb18030"`` reads GB-encoded releases. ``fix`` replaces
    the default advice (which is about a user's data file) for files the pipeline itself writes.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found", fix=fix or "check the path in params.yaml (data.raw)")
    utf8 = encoding.lower().replace("_", "-") in ("utf-8", "utf8")
    try:
        return path.read_bytes().decode("utf-8-sig" if utf8 else encoding)
    except UnicodeDecodeError as e:
        advice = "re-save the file as UTF-8, or set data.encoding: gb18030 if it is GB-encoded"
        raise DataError(f"{path}: byte {e.start} is not valid {encoding}", fix=fix or advice) from None


def read_json_file(path: str | Path, encoding: str = "utf-8", *, fix: str | None = None) -> object:
    """Parse a JSON file, reporting bad syntax with the file, line and column."""
    try:
        return json.loads(read_text_file(path, encoding, fix=fix))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: invalid JSON at line {e.lineno} column {e.colno} ({e.msg})",
                        fix=fix or "repair the file (is it truncated?) and rerun") from None
