"""What every stage script shares: argument parsing, paths of a run, and clean error exits."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from ftbench.io import FtbenchError


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
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--params", default="params.yaml", help="parameter file (default: params.yaml)")
    return p


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
    try:
        fn()
    except FtbenchError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
