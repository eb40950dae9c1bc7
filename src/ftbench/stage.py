"""What every stage script shares: argument parsing, paths of a run, and clean error exits."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftbench.io import FtbenchError
from ftbench.params import METHOD_PARAMS, ModelSpec, Params, load_params


def run_name(method: str, seed: int) -> str:
    return f"{method}-s{seed}"


def model_dir(model: str, run: str) -> Path:
    return Path("models") / model / run


def run_metrics_dir(model: str, run: str) -> Path:
    return Path("metrics") / "runs" / model / run


def predictions_path(model: str, run: str) -> Path:
    return Path("predictions") / model / f"{run}.jsonl"


def checkpoint_dir(model: str, run: str) -> Path:
    return Path("checkpoints") / model / run


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", default="params.yaml", help="parameter file (default: params.yaml)")
    return p


@dataclass
class ModelRun:
    """What a model-level stage (baseline, train, evaluate) resolves from its arguments and params."""

    params: Params
    model: str
    spec: ModelSpec
    device: str
    dtype: Any
    method: str | None = None
    seed: int | None = None
    cfg: Any = None

    @property
    def run_id(self) -> str:
        return "baseline" if self.method is None else run_name(self.method, self.seed)


def model_run(description: str, *, tuned: bool, before_device: Callable[[Params], None] | None = None) -> ModelRun:
    """Parse ``--model`` (and ``--method --seed`` for a tuned run) and resolve them against params.yaml.

    ``before_device`` runs once params are read and before a device is picked (``run.device: auto`` may lock
    a GPU): the train stage hands itself to its launcher there, so the waiting parent holds no GPU.
    """
    from ftbench.registry import pick_device, pick_dtype  # imports torch: only model stages pay for it

    p = parser(description)
    p.add_argument("--model", required=True, help="a name from the models registry in params.yaml")
    if tuned:
        p.add_argument("--method", required=True, help=f"one of {', '.join(METHOD_PARAMS)} (methods in params.yaml)")
        p.add_argument("--seed", type=int, required=True, help="training seed (an entry of run.seeds)")
    args = p.parse_args()
    params = load_params(args.params)
    if before_device is not None:
        before_device(params)
    device = pick_device(params.run.device)
    return ModelRun(params=params, model=args.model, spec=params.model(args.model), device=device,
                    dtype=pick_dtype(params.train.dtype, device), method=args.method if tuned else None,
                    seed=args.seed if tuned else None, cfg=params.method(args.method) if tuned else None)


def main(fn: Callable[[], None]) -> None:
    """Run a stage; an :class:`FtbenchError` becomes one line on stderr and exit code 2."""
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("transformers", "httpx", "huggingface_hub", "bitsandbytes", "absl"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    # What is alive now (torch, transformers and the rest: ~0.5 M objects) lives until exit, so the garbage
    # collector's full passes need not walk it again; and once the stage is done, the interpreter's exit need not
    # walk what the stage built either (a loaded model): ~1.1 s -> ~0.2 s of exit in a model stage. Frozen objects
    # are not finalised by that last collection; nothing relies on it (stages write and close their files and stop
    # their monitors within ``fn``; the GPU lock is held to the end on purpose and dropped by the kernel at exit).
    gc.freeze()
    try:
        fn()
    except FtbenchError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    gc.freeze()
