"""Training cost of each method side by side, on the shipped SmolLM2-135M (CPU or GPU).

    python benchmarks/bench_methods.py [--steps 4] [--batch-size 4]
    python benchmarks/bench_methods.py --logits [--steps 4] [--batch-size 8]

Same examples, same sequence lengths, same number of optimizer steps for every method, each after one
untimed warm-up step (allocator, kernels), in the regime params.yaml sets (train.trainable_dtype,
train.gradient_checkpointing); prints tokens/s, seconds per step, peak memory and trainable parameters,
and each method's ratio to LoRA.
Why: the pipeline's figures come from one full run each; this isolates the per-step cost.

``--logits`` instead times LoRA training steps whose loss comes from the full logits
(``model(**batch).loss``: the output head at every position) and from the answer positions only
(``training.answer_loss``, what the loop runs), one after the other, each in a fresh process so that
its peak memory is its own.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time

import torch

from ftbench.io import read_jsonl
from ftbench.methods import count_trainable, prepare
from ftbench.params import load_params
from ftbench.registry import load_tokenizer, pick_device, pick_dtype
from ftbench.resources import ResourceMonitor
from ftbench.training import answer_loss, collate, encode_examples, seed_everything, train


def _setup(method: str, model_name: str, steps: int, batch_size: int):
    params = load_params()
    spec = params.model(model_name)
    device = pick_device(params.run.device)
    tok = load_tokenizer(model_name, spec)
    rows = read_jsonl("data/processed/train.jsonl")[: (steps + 1) * batch_size]
    data = encode_examples(tok, rows, max_seq_len=params.train.max_seq_len, style=params.eval.prompt,
                           system_prompt=params.eval.system_prompt,
                           completion_only=params.train.completion_only_loss, counts={})
    seed_everything(0)
    model = prepare(method, model_name, spec, params.method(method), dtype=pick_dtype(params.train.dtype, device),
                    device=device, trainable_dtype=pick_dtype(params.train.trainable_dtype, device),
                    gradient_checkpointing=params.train.gradient_checkpointing)
    return params, device, tok, data, model


def _peak_mb(summary: dict) -> float:
    return summary["gpu_peak_memory_allocated_mb"] or summary["peak_rss_mb"]


def measure(method: str, model_name: str, steps: int, batch_size: int) -> dict:
    with ResourceMonitor(0.2) as mon:
        params, device, tok, data, model = _setup(method, model_name, steps, batch_size)
        warmup, data = data[:batch_size], data[batch_size:]
        cfg = dataclasses.replace(params.train, batch_size=batch_size, checkpoint_every=0, warmup_ratio=0.0)
        train(model, warmup, cfg, lr=1e-4, seed=0, pad_id=tok.pad_token_id, device=device)
        result = train(model, data, cfg, lr=1e-4, seed=0, pad_id=tok.pad_token_id, device=device)
    return {"device": device, "tokens_per_s": result.train_tokens / result.train_seconds,
            "s_per_step": result.train_seconds / result.steps, "peak_mb": _peak_mb(mon.summary()),
            "trainable": count_trainable(model)}


def measure_logits(path: str, model_name: str, steps: int, batch_size: int) -> dict:
    """Seconds per LoRA forward+backward (the same batches, fixed order, no length grouping) and peak memory,
    with the loss from the full logits (``full``) or from the answer positions only (``answer``)."""
    with ResourceMonitor(0.05) as mon:
        _, device, tok, data, model = _setup("lora", model_name, steps, batch_size)
        model.train()
        batches = [{k: v.to(device) for k, v in collate(data[i:i + batch_size], tok.pad_token_id).items()}
                   for i in range(0, len(data), batch_size)]
        times, losses = [], []
        for batch in batches:  # the first one is the untimed warm-up
            t0 = time.perf_counter()
            if path == "full":
                loss = model(**batch).loss
            else:
                loss_sum, n = answer_loss(model, batch)
                loss = loss_sum / n
            loss.backward()
            model.zero_grad(set_to_none=True)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
            losses.append(float(loss.detach()))
    return {"device": device, "s_per_step": sum(times[1:]) / len(times[1:]), "peak_mb": _peak_mb(mon.summary()),
            "first_loss": losses[0]}


def _child(extra: list[str], args: argparse.Namespace) -> dict:
    out = subprocess.run([sys.executable, __file__, *extra, "--model", args.model, "--steps", str(args.steps),
                          "--batch-size", str(args.batch_size)], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--logits", action="store_true", help="full-logits loss vs answer-only loss (LoRA)")
    ap.add_argument("--method", help=argparse.SUPPRESS)  # internal: one method in a fresh process
    ap.add_argument("--loss-path", help=argparse.SUPPRESS)  # internal: one loss path in a fresh process
    args = ap.parse_args()
    if args.method:
        print(json.dumps(measure(args.method, args.model, args.steps, args.batch_size)))
        return
    if args.loss_path:
        print(json.dumps(measure_logits(args.loss_path, args.model, args.steps, args.batch_size)))
        return
    if args.logits:
        runs = {path: _child(["--loss-path", path], args) for path in ("full", "answer")}
        full, answer = runs["full"], runs["answer"]
        print(f"{args.model} LoRA on {full['device']}, {args.steps} steps x {args.batch_size} examples, "
              "one process after the other")
        for path, r in runs.items():
            print(f"{path:<7} loss {r['first_loss']:.5f}  {r['s_per_step']:.3f} s/step  peak {r['peak_mb']:.0f} MB")
        print(f"answer-only / full: time {answer['s_per_step'] / full['s_per_step']:.2f}x, "
              f"peak memory {answer['peak_mb'] / full['peak_mb']:.2f}x")
        return
    # a process each, so peak RSS is that method's own
    results = {method: _child(["--method", method], args) for method in ("lora", "qlora", "top_layer")}
    base = results["lora"]
    print(f"{args.model} on {base['device']}, {args.steps} steps x {args.batch_size} examples (after dvc repro)")
    print(f"{'method':<10} {'tokens/s':>9} {'s/step':>7} {'peak MB':>8} {'trainable':>11}   vs LoRA: tokens/s, peak")
    for method, r in results.items():
        print(f"{method:<10} {r['tokens_per_s']:>9.0f} {r['s_per_step']:>7.2f} {r['peak_mb']:>8.0f} "
              f"{r['trainable']:>11,}   {r['tokens_per_s'] / base['tokens_per_s']:.2f}x, "
              f"{r['peak_mb'] / base['peak_mb']:.2f}x")


if __name__ == "__main__":
    main()
