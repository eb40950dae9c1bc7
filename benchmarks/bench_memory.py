"""LoRA training memory against time on the shipped SmolLM2-135M: the same optimizer steps (the default
batches of 8, packed with their shared prefixes as ``train.share_prefix`` says) run four ways, each in a
fresh process so that its peak RSS is its own:

- ``batch``: each batch of 8 in one forward/backward, however many positions it holds;
- ``tokens``: each batch cut into micro-batches of at most ``train.micro_batch_tokens`` positions (512 if
  null), between documents where they fit (``training.split_by_positions``: what the pipeline runs);
- ``micro``: each batch as 2 micro-batches of 4 (in params: ``train.batch_size: 4, train.grad_accum: 2``);
- ``checkpointing``: one forward/backward with activation checkpointing (``train.gradient_checkpointing``).

All four give the same update up to float error (token-weighted accumulation, ``accumulate_step``).

    python benchmarks/bench_memory.py [--steps 10] [--modes batch,tokens]   # --steps 0: every batch (the true peak)

Prints seconds per step (after 2 untimed warm-up steps), peak RSS (``ru_maxrss``) and each mode's ratio to
``batch``. The peak is set by the largest batches: a few steps may miss them, ``--steps 0`` does not. Run
after ``dvc repro format`` (it reads data/processed/train.jsonl).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from ftbench.io import read_jsonl
from ftbench.methods import prepare
from ftbench.params import load_params
from ftbench.registry import load_tokenizer
from ftbench.training import accumulate_step, batch_plan, encode_examples, sharing_units, split_by_positions

MODES = ("batch", "tokens", "micro", "checkpointing")
WARMUP = 2


def measure(mode: str, steps: int, *, setup=None) -> dict:
    """``steps`` timed LoRA forward/backward passes of the default batches after ``WARMUP`` untimed ones;
    ``setup(model)`` (if given) may replace the model (e.g. ``torch.compile``) before the first step."""
    params = load_params("params.yaml")
    name = params.run.models[0]
    spec, t = params.model(name), params.train
    tok = load_tokenizer(name, spec)
    data = encode_examples(tok, read_jsonl("data/processed/train.jsonl"), max_seq_len=t.max_seq_len,
                           style=params.eval.prompt, system_prompt=params.eval.system_prompt, completion_only=True,
                           counts={})
    model = prepare("lora", name, spec, params.method("lora"), dtype=torch.float32, device="cpu",
                    gradient_checkpointing=mode == "checkpointing")
    model.train()
    run = setup(model) if setup else model
    share = t.share_prefix  # as the pipeline runs: a document's questions batched together and packed
    plan = batch_plan([len(e.input_ids) for e in data], batch_size=8, epochs=1, seed=params.seed,
                      group_by_length=t.group_by_length, units=sharing_units(data) if share else None)
    budget = t.micro_batch_tokens or 512
    steps = steps or max(1, len(plan) - WARMUP)
    start = first = time.perf_counter()
    warmup_s = 0.0
    for i in range(WARMUP + steps):
        if i == WARMUP:
            start = time.perf_counter()
            warmup_s = start - first
        b = plan[i % len(plan)]
        if mode in ("batch", "checkpointing"):
            parts = [b]
        elif mode == "micro":
            parts = [b[:4], b[4:]]
        else:  # tokens, and bench_cpu's modes: cut as the pipeline cuts them
            parts = split_by_positions(data, b, budget if mode == "tokens" else t.micro_batch_tokens, share)
        accumulate_step(run, data, parts, pad_id=tok.pad_token_id, device="cpu", share_prefix=share)
        model.zero_grad(set_to_none=True)
    return {"mode": mode, "s_per_step": (time.perf_counter() - start) / steps, "warmup_s": warmup_s,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_modes(script: str, modes: list[str], steps: int, timeout: int | None = None) -> list[dict]:
    """Each mode of ``script`` in a fresh process (``--one MODE``), one after the other, never two at once;
    a mode that fails or runs past ``timeout`` is reported and left out."""
    rows = []
    for mode in modes:
        try:
            out = subprocess.run([sys.executable, script, "--one", mode, "--steps", str(steps)],
                                 capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            print(f"{mode}: over {timeout} s (warm-up included), not kept")
            continue
        if out.returncode:
            print(f"{mode}: failed\n{out.stderr[-2000:]}")
            continue
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return rows


def print_table(rows: list[dict]) -> None:
    """Seconds per step, warm-up, peak RSS and each mode's ratios to the first."""
    base = rows[0]
    print(f"{'mode':<14}{'threads':>8}{'s/step':>8}{'warm-up s':>10}{'peak RSS MB':>13}{'time ×':>8}{'memory ×':>10}")
    for r in rows:
        print(f"{r['mode']:<14}{r.get('threads', '-'):>8}{r['s_per_step']:>8.2f}{r['warmup_s']:>10.1f}"
              f"{r['peak_rss_mb']:>13.0f}{r['s_per_step'] / base['s_per_step']:>8.2f}"
              f"{r['peak_rss_mb'] / base['peak_rss_mb']:>10.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated, the first is the reference")
    p.add_argument("--one", choices=MODES, help=argparse.SUPPRESS)  # the child process
    args = p.parse_args()
    if args.one:
        print(json.dumps({**measure(args.one, args.steps), "threads": torch.get_num_threads()}))
        return
    modes = args.modes.split(",")
    if unknown := set(modes) - set(MODES):
        p.error(f"unknown modes {sorted(unknown)}; choose from {','.join(MODES)}")
    print_table(run_modes(__file__, modes, args.steps))


if __name__ == "__main__":
    main()
