"""Training cost of each method side by side, on the shipped SmolLM2-135M (CPU or GPU).

    python benchmarks/bench_methods.py [--steps 4] [--batch-size 4]

Same examples, same sequence lengths, same number of optimizer steps for every method, each after one
untimed warm-up step (allocator, kernels); prints tokens/s, seconds per step, peak memory and trainable
parameters, and each method's ratio to LoRA.
Why: the pipeline's figures come from one full run each; this isolates the per-step cost.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys

from ftbench.io import read_jsonl
from ftbench.methods import count_trainable, prepare
from ftbench.params import load_params
from ftbench.registry import load_tokenizer, pick_device, pick_dtype
from ftbench.resources import ResourceMonitor
from ftbench.training import encode_examples, seed_everything, train


def measure(method: str, model_name: str, steps: int, batch_size: int) -> dict:
    params = load_params()
    spec = params.model(model_name)
    device = pick_device(params.run.device)
    dtype = pick_dtype(params.train.dtype, device)
    tok = load_tokenizer(model_name, spec)
    rows = read_jsonl("data/processed/train.jsonl")[: (steps + 1) * batch_size]
    data = encode_examples(tok, rows, max_seq_len=params.train.max_seq_len, style=params.eval.prompt,
                           system_prompt=params.eval.system_prompt,
                           completion_only=params.train.completion_only_loss, counts={})
    warmup, data = data[:batch_size], data[batch_size:]
    cfg = dataclasses.replace(params.train, batch_size=batch_size, checkpoint_every=0, warmup_ratio=0.0)
    seed_everything(0)
    with ResourceMonitor(0.2) as mon:
        model = prepare(method, model_name, spec, params.method(method), dtype=dtype, device=device)
        train(model, warmup, cfg, lr=1e-4, seed=0, pad_id=tok.pad_token_id, device=device)
        result = train(model, data, cfg, lr=1e-4, seed=0, pad_id=tok.pad_token_id, device=device)
    summary = mon.summary()
    return {"device": device, "tokens_per_s": result.train_tokens / result.train_seconds,
            "s_per_step": result.train_seconds / result.steps,
            "peak_mb": summary["gpu_peak_memory_allocated_mb"] or summary["peak_rss_mb"],
            "trainable": count_trainable(model)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--method", help=argparse.SUPPRESS)  # internal: one method in a fresh process
    args = ap.parse_args()
    if args.method:
        print(json.dumps(measure(args.method, args.model, args.steps, args.batch_size)))
        return
    results = {}
    for method in ("lora", "qlora", "top_layer"):  # a process each, so peak RSS is that method's own
        out = subprocess.run([sys.executable, __file__, "--method", method, "--model", args.model, "--steps",
                              str(args.steps), "--batch-size", str(args.batch_size)],
                             check=True, capture_output=True, text=True).stdout
        results[method] = json.loads(out.strip().splitlines()[-1])
    base = results["lora"]
    print(f"{args.model} on {base['device']}, {args.steps} steps x {args.batch_size} examples (after dvc repro)")
    print(f"{'method':<10} {'tokens/s':>9} {'s/step':>7} {'peak MB':>8} {'trainable':>11}   vs LoRA: tokens/s, peak")
    for method, r in results.items():
        print(f"{method:<10} {r['tokens_per_s']:>9.0f} {r['s_per_step']:>7.2f} {r['peak_mb']:>8.0f} "
              f"{r['trainable']:>11,}   {r['tokens_per_s'] / base['tokens_per_s']:.2f}x, "
              f"{r['peak_mb'] / base['peak_mb']:.2f}x")


if __name__ == "__main__":
    main()
