"""LoRA training throughput: ftbench's loop vs ``transformers.Trainer`` on the same rows and settings.

    python benchmarks/bench_vs_trainer.py [--rows 48|all] [--model smollm2-135m|DIR] [--src SRC] [--old-src OLD/src]
                                          [--repeat N] [--profile]

Both sides train ``methods.lora`` with ``train.*`` of params.yaml (lr, batch size, grad_accum, warmup,
weight decay, clipping, epochs, seed, group_by_length) on the same encoded examples
(``ftbench.training.encode_examples``: same prompts, answer-only labels), one after the other, each in a
fresh process so peak RSS is that side's own. The Trainer side is the standard recipe without extras:
a padding collator that keeps ftbench's labels, ``adamw_torch``, no workers, no evaluation, saving or
reporting, and the model from the same ``ftbench.methods.prepare`` call (same adapter initialisation, dtype
and trainable dtype; fp32 on the CPU). Printed per side: optimizer steps, samples and
non-padding tokens trained on, training seconds (the training call only: load and encoding excluded),
samples/s, tokens/s, peak RSS, last-step and mean loss, torch threads; then the ftbench/Trainer ratios.
``--old-src OLD/src`` adds a third side, ftbench's loop imported from an older checkout (``git worktree add``)
on the same rows, and prints the new/old ratio too: the issue's "2x main at 864b65d" measured in the same run.
``--repeat N`` runs all sides N times, the order rotated each round (ftbench, Trainer, old; then Trainer,
old, ftbench; ...), prints every round and the median [min, max] of each ratio over the rounds: the figure
to quote, because the same code's ratio swings by a third from one run to the next on these machines.
``--profile`` adds a process: torch.profiler over one optimizer step of ftbench's loop (after one
untimed step), top ops by self CPU time.
Why: the issue's target is a ratio to a standard Trainer measured in one run, because absolute timings on
these shared machines vary up to 2x between days. The two sides draw batches in different orders
(ftbench's sampler vs Trainer's), so their losses agree only roughly.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from pathlib import Path
from typing import Any

from _common import (
    Settings,
    add_common_args,
    call,
    emit,
    forwarded,
    ftbench_origin,
    load_settings,
    old_side_argv,
    peak_rss_mb,
    print_ratio_medians,
    read_rows,
    rotated,
    run_rounds,
    run_side,
    use_src,
)

IGNORE = -100


def _encoded(s: Settings, rows_arg: str) -> tuple[Any, list]:
    from ftbench.registry import load_tokenizer
    from ftbench.training import encode_examples

    tok = load_tokenizer(s.name, s.spec)
    rows = read_rows("train", None if rows_arg == "all" else int(rows_arg))
    data = call(encode_examples, tok, rows, max_seq_len=s.train.max_seq_len, style=s.eval.prompt,
                system_prompt=s.eval.system_prompt, completion_only=s.train.completion_only_loss, counts={},
                context_truncation=getattr(s.eval, "context_truncation", None))
    return tok, data


def _lora_model(s: Settings) -> Any:
    from ftbench.methods import prepare
    from ftbench.training import seed_everything

    seed_everything(s.seed)  # adapter initialisation draws from the RNG: same start on both sides
    # One model builder for both sides, so the Trainer gets ftbench's regime (trainable dtype, checkpointing).
    return call(prepare, "lora", s.name, s.spec, s.lora, dtype=s.dtype, device=s.device,
                trainable_dtype=s.trainable_dtype,
                gradient_checkpointing=bool(s.raw_train.get("gradient_checkpointing", False)))


def _optimizer_steps(s: Settings, n: int) -> int:
    """ftbench's step count: ceil(ceil(batches per epoch x epochs) / grad_accum)."""
    micro = max(1, math.ceil(math.ceil(n / s.train.batch_size) * s.train.epochs))
    return max(1, math.ceil(micro / s.train.grad_accum))


def _ftbench_train(s: Settings, model: Any, tok: Any, data: list, log: Any = None) -> Any:
    from ftbench.training import train

    cfg = dataclasses.replace(s.train, checkpoint_every=0, log_every=1)
    return call(train, model, data, cfg, lr=s.lr, seed=s.seed, pad_id=tok.pad_token_id, device=s.device, log=log)


def side_ftbench(s: Settings, args: argparse.Namespace) -> dict:
    import torch

    tok, data = _encoded(s, args.rows)
    model = _lora_model(s)
    losses: list[float] = []
    start = time.perf_counter()
    result = _ftbench_train(s, model, tok, data, log=lambda step, values: losses.append(values.get("loss")))
    seconds = time.perf_counter() - start
    losses = [v for v in losses if v is not None]
    return {"steps": result.steps, "samples": result.samples, "tokens": result.train_tokens, "seconds": seconds,
            "final_loss": result.final_loss, "mean_loss": sum(losses) / len(losses) if losses else None,
            "threads": torch.get_num_threads(), "peak_rss_mb": peak_rss_mb(), "n_examples": len(data)}


def side_trainer(s: Settings, args: argparse.Namespace) -> dict:
    import tempfile

    import torch
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    tok, data = _encoded(s, args.rows)
    model = _lora_model(s)
    tok.padding_side = "right"
    pad = DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=IGNORE, return_tensors="pt")
    seen = {"samples": 0, "tokens": 0}

    def collate(features: list[dict]) -> dict:  # counts what is trained on, as ftbench's loop does
        batch = pad(features)
        seen["samples"] += len(features)
        seen["tokens"] += int(batch["attention_mask"].sum())
        return batch

    steps = _optimizer_steps(s, len(data))
    # The knob as params.yaml states it (an old ftbench may not know it; Trainer still gets it).
    grouped = bool(s.raw_train.get("group_by_length", False))
    max_grad_norm = s.raw_train.get("max_grad_norm", 1.0)  # ftbench before the knob clipped at 1.0
    with tempfile.TemporaryDirectory() as out:
        targs = TrainingArguments(
            output_dir=out, per_device_train_batch_size=s.train.batch_size,
            gradient_accumulation_steps=s.train.grad_accum, learning_rate=s.lr, weight_decay=s.train.weight_decay,
            max_grad_norm=max_grad_norm or 0.0, max_steps=steps, lr_scheduler_type="linear",
            warmup_steps=math.ceil(s.train.warmup_ratio * steps), optim="adamw_torch", seed=s.seed,
            train_sampling_strategy="group_by_length" if grouped else "random",
            use_cpu=s.device == "cpu", dataloader_num_workers=0, dataloader_pin_memory=False,
            report_to="none", save_strategy="no", eval_strategy="no", logging_steps=1, disable_tqdm=True,
            remove_unused_columns=False)
        dataset = [{"input_ids": e.input_ids, "labels": e.labels} for e in data]
        trainer = Trainer(model=model, args=targs, train_dataset=dataset, data_collator=collate, processing_class=tok)
        start = time.perf_counter()
        out_metrics = trainer.train()
        seconds = time.perf_counter() - start
    logged = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"steps": trainer.state.global_step, "samples": seen["samples"], "tokens": seen["tokens"],
            "seconds": seconds, "final_loss": logged[-1] if logged else None, "mean_loss": out_metrics.training_loss,
            "threads": torch.get_num_threads(), "peak_rss_mb": peak_rss_mb(), "n_examples": len(data)}


def side_profile(s: Settings, args: argparse.Namespace) -> dict:
    from torch.profiler import ProfilerActivity, profile

    tok, data = _encoded(s, args.rows)
    one_step = data[: s.train.batch_size * s.train.grad_accum]
    s = dataclasses.replace(s, train=dataclasses.replace(s.train, epochs=1))
    model = _lora_model(s)
    _ftbench_train(s, model, tok, one_step)  # untimed: first-call allocations and kernel selection
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        _ftbench_train(s, model, tok, one_step)
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.profile_rows)
    return {"table": table, "examples": len(one_step)}


SIDES = {"ftbench": side_ftbench, "Trainer": side_trainer, "profile": side_profile}


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


_RATES = {"samples/s": "samples_per_s", "tokens/s": "tokens_per_s", "peak RSS": "peak_rss_mb"}


def _round_ratios(results: dict[str, dict]) -> dict[str, dict[str, float]]:
    """One round's rates (written into each side's result) and, per pair of sides ("ftbench/Trainer", ...),
    the ratio of each figure of ``_RATES``."""
    for r in results.values():
        r["samples_per_s"], r["tokens_per_s"] = r["samples"] / r["seconds"], r["tokens"] / r["seconds"]
    pairs = [("ftbench", "Trainer")] + ([("ftbench", "old"), ("old", "Trainer")] if "old" in results else [])
    return {f"{x}/{y}": {label: results[x][key] / results[y][key] for label, key in _RATES.items()}
            for x, y in pairs}


def _print_round(results: dict[str, dict], ratios: dict[str, dict[str, float]], k: int, n: int) -> None:
    if n > 1:
        print(f"\nround {k + 1} of {n} (run in the order {', '.join(rotated(list(results), k))})")
    print(f"{'side':<8} {'steps':>5} {'samples':>7} {'tokens':>7} {'train s':>8} {'samples/s':>9} "
          f"{'tokens/s':>8} {'peak RSS MB':>11} {'final loss':>10} {'mean loss':>9} {'threads':>7}")
    for side, r in results.items():
        print(f"{side:<8} {r['steps']:>5} {r['samples']:>7} {r['tokens']:>7} {r['seconds']:>8.1f} "
              f"{r['samples_per_s']:>9.2f} {r['tokens_per_s']:>8.0f} {r['peak_rss_mb']:>11.0f} "
              f"{_fmt(r['final_loss'], '.4f'):>10} {_fmt(r['mean_loss'], '.4f'):>9} {r['threads']:>7}")
    for pair, figures in ratios.items():
        print(f"ratio {pair}: " + ", ".join(f"{label} {value:.2f}x" for label, value in figures.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(ap)
    ap.add_argument("--rows", default="48", help="first N rows of data/processed/train.jsonl, or 'all'")
    ap.add_argument("--old-src", help="also run ftbench's loop from this older src/ (a third side, same rows)")
    ap.add_argument("--old-params", help="params file of the old side (default: the one beside --old-src)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds of all sides, order rotated each round (a multiple of the number of sides runs "
                         "each side in each position equally often); prints each round and the median ratios")
    ap.add_argument("--profile", action="store_true", help="also profile one step of ftbench's loop")
    ap.add_argument("--profile-rows", type=int, default=25, help="ops shown by --profile")
    args = ap.parse_args()
    if args.rows != "all" and not (args.rows.isdigit() and int(args.rows) > 0):
        ap.error("--rows must be a positive integer or 'all'")
    if args.repeat < 1:
        ap.error("--repeat must be positive")
    use_src(args)
    s = load_settings(args)
    if args.side:
        emit(SIDES[args.side](s, args))
        return

    from ftbench.registry import resolve

    resolve(s.name, s.spec)  # materialise a GGUF model once here, so neither side's peak RSS includes it
    argv = ["--rows", args.rows, "--profile-rows", str(args.profile_rows),
            *forwarded(args, ["model", "src", "threads", "params"])]
    sides = [("ftbench", "ftbench", argv), ("Trainer", "Trainer", argv)]
    if args.old_src:
        sides.append(("old", "ftbench", old_side_argv(argv, args.old_src, args.old_params)))
    rounds = run_rounds(__file__, sides, args.repeat)
    t = s.train
    first = rounds[0]
    print(f"LoRA r={s.lora.r} on {s.name} ({s.device}, {str(s.dtype).removeprefix('torch.')}); "
          f"{first['ftbench']['n_examples']} examples x {t.epochs} epoch(s), batch {t.batch_size} x accum "
          f"{t.grad_accum}, lr {s.lr:g}, warmup {t.warmup_ratio}, wd {t.weight_decay}, seed {s.seed}")
    grouped = s.raw_train.get("group_by_length", False)
    knows = "knob known to this ftbench" if hasattr(s.train, "group_by_length") else "knob unknown to this ftbench"
    print(f"ftbench imported from {ftbench_origin()}; train.group_by_length: {grouped} ({knows}; Trainer: "
          f"train_sampling_strategy={'group_by_length' if grouped else 'random'})")
    if args.old_src:
        print(f"old: ftbench imported from {Path(args.old_src).resolve()}")
    ratios: dict[str, list[float]] = {}
    for k, results in enumerate(rounds):
        this_round = _round_ratios(results)
        _print_round(results, this_round, k, len(rounds))
        for pair, figures in this_round.items():
            for label in ("samples/s", "peak RSS"):
                ratios.setdefault(f"{pair} {label}", []).append(figures[label])
    if len(rounds) > 1:
        print_ratio_medians(ratios)
    if args.profile:
        prof = run_side(__file__, "profile", argv)
        print(f"\ntorch.profiler: one optimizer step of ftbench's loop ({prof['examples']} examples), "
              f"top ops by self CPU time")
        print(prof["table"])


if __name__ == "__main__":
    main()
