"""Plumbing shared by the side-by-side benchmarks (bench_vs_trainer.py, bench_generation.py).

Why each piece exists:
- ``--src`` picks which ftbench to import (this checkout or an old one added with ``git worktree``), so one
  script measures old and new code one after the other on the same machine; ftbench is therefore imported
  only after :func:`use_src`, never at module level.
- Each side runs in a fresh process (:func:`run_side`), so its peak RSS is its own and neither side
  inherits the other's warmed allocator or thread pool.
- Settings are read from the raw params.yaml and built into whatever dataclasses the imported ftbench
  defines (:func:`load_settings`): an old checkout's strict loader rejects keys added since, and both
  sides must get the same hyperparameters anyway.
- :func:`run_rounds` repeats all sides, rotating their order each round, and :func:`print_ratio_medians`
  summarises each ratio over the rounds: the same code's ratio swings by a third between runs on shared
  machines, so one round neither proves nor disproves a target.
- :func:`call` drops keyword arguments the imported version does not take, so small signature changes
  between versions do not break the benchmark (a missing *required* argument still fails loudly).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import os
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def add_common_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--model", default="smollm2-135m",
                    help="a models.<name> entry of params.yaml, or a local model directory (e.g. a tiny random model)")
    ap.add_argument("--src", help="src/ directory to import ftbench from (default: this checkout's)")
    ap.add_argument("--threads", type=int, help="torch threads in every side (default: torch's own default)")
    ap.add_argument("--params", default=str(REPO / "params.yaml"), help="params file both sides read")
    ap.add_argument("--side", help=argparse.SUPPRESS)  # internal: run one side in this (fresh) process


def use_src(args: argparse.Namespace) -> None:
    """Import ftbench from ``args.src`` (if given) and run from the repository root, where data/ lives."""
    if args.src:
        src = Path(args.src).resolve()
        if not (src / "ftbench" / "__init__.py").exists():
            sys.exit(f"error: --src {args.src} has no ftbench package (fix: pass the src/ folder of a checkout)")
        sys.path.insert(0, str(src))
    os.chdir(REPO)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)


def forwarded(args: argparse.Namespace, names: list[str]) -> list[str]:
    """Command-line options to hand to a side process."""
    out = []
    for name in names:
        value = getattr(args, name)
        if value is not None:
            out += [f"--{name.replace('_', '-')}", str(value)]
    return out


def old_side_argv(argv: list[str], old_src: str, old_params: str | None) -> list[str]:
    """A side's arguments for the old checkout: its own src/ and, unless given, the params.yaml beside it (the
    old code with the defaults it shipped with)."""
    out = list(argv)
    for flag in ("--src", "--params"):
        if flag in out:
            del out[out.index(flag):out.index(flag) + 2]
    return [*out, "--src", old_src, "--params", old_params or str(Path(old_src).resolve().parent / "params.yaml")]


def run_side(script: str, side: str, argv: list[str]) -> dict:
    """Run ``script --side side`` in a fresh interpreter; its last stdout line is a JSON result."""
    proc = subprocess.run([sys.executable, script, "--side", side, *argv], capture_output=True, text=True,
                          cwd=REPO)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-25:])
        sys.exit(f"error: side '{side}' failed (exit {proc.returncode}):\n{tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def rotated(items: list, k: int) -> list:
    """``items`` rotated left by ``k``: the order of round ``k`` in :func:`run_rounds`."""
    return items[k % len(items):] + items[:k % len(items)]


def run_rounds(script: str, sides: list[tuple[str, str, list[str]]], repeat: int) -> list[dict[str, dict]]:
    """Every side of ``sides`` (label, ``--side`` name, arguments) ``repeat`` times, each in a fresh process.

    Round k runs the sides in the list's order rotated by k, so a machine that slows down or speeds up during
    the run does not favour whichever side always comes first. Returns one {label: result} per round.
    """
    out = []
    for k in range(repeat):
        order = rotated(sides, k)
        out.append({label: run_side(script, side, argv) for label, side, argv in order})
        out[-1] = {label: out[-1][label] for label, _, _ in sides}  # report in the list's order
    return out


def print_ratio_medians(ratios: dict[str, list[float]]) -> None:
    """The median and range of each per-round ratio: the figure to quote when the machine's speed swings
    between runs (each ratio is taken within one round, both sides measured minutes apart)."""
    import statistics

    n = len(next(iter(ratios.values())))
    print(f"\nratios over {n} rounds (order rotated each round; median [min, max]; each ratio taken within its round):")
    for name, values in ratios.items():
        shown = ", ".join(f"{v:.2f}" for v in values)
        print(f"  {name}: {statistics.median(values):.2f}x [{min(values):.2f}, {max(values):.2f}]  ({shown})")


def emit(result: dict) -> None:
    """A side's result for :func:`run_side` (always the last stdout line)."""
    print(json.dumps(result), flush=True)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB), model load included."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def call(fn: Callable, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` without the keyword arguments this version of ``fn`` does not accept."""
    params = inspect.signature(fn).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        kwargs = {k: v for k, v in kwargs.items() if k in params}
    return fn(*args, **kwargs)


def _known(cls: type, raw: dict | None) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in (raw or {}).items() if k in names})


@dataclasses.dataclass
class Settings:
    name: str
    spec: Any
    train: Any          # the imported ftbench's TrainParams
    lora: Any           # its LoraParams (methods.lora)
    eval: Any           # its EvalParams
    seed: int
    lr: float           # methods.lora.lr if set, else train.lr
    device: str
    dtype: Any          # of the frozen weights (train.dtype)
    trainable_dtype: Any  # of the trainable ones (train.trainable_dtype; an old ftbench keeps them in dtype)
    raw_train: dict     # train.* as written in params.yaml (knobs an old ftbench may not know)


def load_settings(args: argparse.Namespace) -> Settings:
    """params.yaml read into the imported ftbench's dataclasses; ``--model`` a registry name or a directory."""
    import yaml

    from ftbench.params import EvalParams, LoraParams, ModelSpec, TrainParams
    from ftbench.registry import pick_device, pick_dtype

    raw = yaml.safe_load(Path(args.params).read_text(encoding="utf-8")) or {}
    if Path(args.model).is_dir():
        name, spec = Path(args.model).name, ModelSpec(path=str(Path(args.model).resolve()))
    elif args.model in (raw.get("models") or {}):
        name, spec = args.model, _known(ModelSpec, raw["models"][args.model])
    else:
        sys.exit(f"error: --model {args.model} is neither a models entry of {args.params} nor a directory "
                 f"(fix: use one of {', '.join(raw.get('models') or {})} or a model folder)")
    raw_train = raw.get("train") or {}
    train, lora = _known(TrainParams, raw_train), _known(LoraParams, (raw.get("methods") or {}).get("lora"))
    device = pick_device((raw.get("run") or {}).get("device", "auto"))
    lr = getattr(lora, "lr", None) or train.lr
    return Settings(name=name, spec=spec, train=train, lora=lora, eval=_known(EvalParams, raw.get("eval")),
                    seed=int(raw.get("seed", 42)), lr=lr, device=device, dtype=pick_dtype(train.dtype, device),
                    trainable_dtype=pick_dtype(raw_train.get("trainable_dtype", "float32"), device),
                    raw_train=raw_train)


def read_rows(split: str, n: int | None) -> list[dict]:
    """The first ``n`` rows (all if None) of data/processed/<split>.jsonl, the pipeline's own split."""
    from ftbench.io import read_jsonl

    path = REPO / "data" / "processed" / f"{split}.jsonl"
    if not path.exists():
        sys.exit(f"error: {path} not found (fix: DVC_NO_ANALYTICS=1 dvc repro format)")
    rows = read_jsonl(path)
    return rows if n is None else rows[:n]


def ftbench_origin() -> str:
    import ftbench

    return str(Path(ftbench.__file__).resolve().parent.parent)
