"""CPU settings for LoRA training on the shipped SmolLM2-135M: the same default batches (length-grouped
batches of 8, one forward/backward each) under each setting, each in a fresh process, one after the other:

- ``default``: what the pipeline runs (torch's thread count, glibc malloc, eager; packed shared prefixes);
- ``threads1``: ``torch.set_num_threads(1)`` (is the second core worth having for one run?);
- ``mmap``: glibc ``mallopt(M_MMAP_THRESHOLD, 256 KiB)`` — every large tensor gets its own mapping, returned
  to the system when freed, so RSS follows the live tensors instead of the heap's high-water mark;
- ``compile``: ``torch.compile`` (inductor, ``dynamic=True``) of the transformer body; its compile time is
  the warm-up column, paid once per training run.

    python benchmarks/bench_cpu.py [--steps 10] [--modes default,threads1,mmap,compile] [--timeout 600]

Prints seconds per step (after 2 untimed warm-up steps), warm-up seconds, peak RSS and each mode's ratio to
``default``. Run after ``dvc repro format``. Why: the issue asks to keep a setting only if it is faster
on this CPU, and these machines vary up to 2x between days, so only ratios from one run count.
"""

from __future__ import annotations

import argparse
import ctypes
import json

import torch
from bench_memory import measure, print_table, run_modes

MODES = ("default", "threads1", "mmap", "compile")
M_MMAP_THRESHOLD = -3  # glibc malloc.h


def setup(mode: str):
    if mode == "threads1":
        torch.set_num_threads(1)
    if mode == "mmap":
        ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, 256 * 1024)
    if mode == "compile":
        return _compiled
    return None


def _compiled(model):
    """The transformer body's forward compiled in place: the loss calls the body (found by
    ``get_decoder()``, which would look through a compiled wrapper module), then the head at the labelled
    positions."""
    body = model.get_base_model().get_decoder()
    body.forward = torch.compile(body.forward, dynamic=True)
    return model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--timeout", type=int, default=600, help="seconds a mode may take, warm-up included")
    p.add_argument("--one", choices=MODES, help=argparse.SUPPRESS)  # the child process
    args = p.parse_args()
    if args.one:
        result = measure(args.one, args.steps, setup=setup(args.one))
        print(json.dumps({**result, "threads": torch.get_num_threads()}))
        return
    modes = args.modes.split(",")
    if unknown := set(modes) - set(MODES):
        p.error(f"unknown modes {sorted(unknown)}; choose from {','.join(MODES)}")
    print_table(run_modes(__file__, modes, args.steps, args.timeout))


if __name__ == "__main__":
    main()
