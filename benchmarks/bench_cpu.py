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
import subprocess
import sys

import torch
from bench_memory import measure

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
    rows = []
    for mode in modes:  # one after the other, never two at once
        try:
            out = subprocess.run([sys.executable, __file__, "--one", mode, "--steps", str(args.steps)],
                                 capture_output=True, text=True, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            print(f"{mode}: over {args.timeout} s (warm-up included), not kept")
            continue
        if out.returncode:
            print(f"{mode}: failed\n{out.stderr[-2000:]}")
            continue
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    base = rows[0]
    print(f"{'mode':<10}{'threads':>8}{'s/step':>8}{'warm-up s':>10}{'peak RSS MB':>13}{'time ×':>8}{'memory ×':>10}")
    for r in rows:
        print(f"{r['mode']:<10}{r['threads']:>8}{r['s_per_step']:>8.2f}{r['warmup_s']:>10.1f}{r['peak_rss_mb']:>13.0f}"
              f"{r['s_per_step'] / base['s_per_step']:>8.2f}{r['peak_rss_mb'] / base['peak_rss_mb']:>10.2f}")


if __name__ == "__main__":
    main()
