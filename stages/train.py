"""Stage train: fine-tune one (model, method, seed) and record what it cost.

    python stages/train.py --model smollm2-135m --method lora --seed 42

Writes models/<model>/<method>-s<seed>/ (only what the method must ship), and under
metrics/runs/<model>/<method>-s<seed>/: train.json (cost figures), train_timeseries.csv
(power/memory samples) and dvclive/ (loss curve). Resumes from checkpoints/ after a crash.
"""

import dataclasses

from ftbench.io import atomic_dir, dir_size_bytes, read_jsonl, write_json
from ftbench.methods import count_trainable, prepare, save_trained
from ftbench.registry import base_model_size_bytes, base_param_count, load_tokenizer
from ftbench.resources import (
    ResourceMonitor,
    measure_peak_flops,
    model_flops_utilization,
    training_flops_per_token,
)
from ftbench.stage import checkpoint_dir, main, model_dir, model_run, run_metrics_dir
from ftbench.training import Checkpointer, encode_examples, eval_loss, result_dict, seed_everything, train

MB = 1024 * 1024


def run() -> None:
    r = model_run(__doc__, tuned=True)
    params, spec, cfg, device, dtype, run_id = r.params, r.spec, r.cfg, r.device, r.dtype, r.run_id
    peak, peak_source = params.monitor.peak_flops, "params"
    if peak is None:  # probed first, in a clean process, so every method is measured against the same peak
        # n=4096 fills a large GPU (a 1024 matmul under-reads its peak); on a CPU 1024 already saturates
        n = 4096 if device.startswith("cuda") else 1024
        peak, peak_source = measure_peak_flops(device, dtype=dtype, n=n), "measured_matmul_probe"
    metrics_dir = run_metrics_dir(r.model, run_id)
    tokenizer = load_tokenizer(r.model, spec)
    counts: dict = {}
    encode = dict(max_seq_len=params.train.max_seq_len, style=params.eval.prompt,
                  system_prompt=params.eval.system_prompt, completion_only=params.train.completion_only_loss,
                  counts=counts)
    train_data = encode_examples(tokenizer, read_jsonl("data/processed/train.jsonl"), **encode)
    val_data = encode_examples(tokenizer, read_jsonl("data/processed/validation.jsonl"), **encode)
    lr = params.lr_for(r.method)
    checkpointer = Checkpointer(checkpoint_dir(r.model, run_id), {
        "model": dataclasses.asdict(spec), "method": dataclasses.asdict(cfg), "train": dataclasses.asdict(params.train),
        "seed": r.seed, "n_train": len(train_data), "device": device})

    from dvclive import Live

    with Live(dir=str(metrics_dir / "dvclive"), dvcyaml=None, save_dvc_exp=False, report=None) as live:
        def log(step: int, values: dict) -> None:
            live.step = step
            for k, v in values.items():
                live.log_metric(f"train/{k}", v)

        with ResourceMonitor(params.monitor.interval_s) as monitor:
            seed_everything(r.seed)  # adapter initialisation draws from the RNG too
            model = prepare(r.method, r.model, spec, cfg, dtype=dtype, device=device)
            result = train(model, train_data, params.train, lr=lr, seed=r.seed, pad_id=tokenizer.pad_token_id,
                           device=device, checkpointer=checkpointer, log=log)
        val_loss = eval_loss(model, val_data, batch_size=params.eval.batch_size, pad_id=tokenizer.pad_token_id,
                             device=device)
        live.log_metric("val/loss", val_loss if val_loss is not None else float("nan"), plot=False)

    trainable = count_trainable(model)
    total = base_param_count(model.config)
    flops_per_token = training_flops_per_token(model)
    meta = {"model": r.model, "method": r.method, "seed": r.seed, "config": dataclasses.asdict(cfg)}
    out = model_dir(r.model, run_id)
    with atomic_dir(out) as tmp:
        save_trained(model, r.method, tmp, meta)
    base_size = base_model_size_bytes(r.model, spec)
    res = monitor.summary()
    report = {
        "model": r.model, "method": r.method, "seed": r.seed, "device": res["device"],
        "trainable_params": trainable, "total_params": total, "trainable_percent": 100.0 * trainable / total,
        **result_dict(result), "lr": lr, "val_loss": val_loss,
        "tokens_per_s": result.train_tokens / result.train_seconds,
        "samples_per_s": result.samples / result.train_seconds,
        "train_flops_per_token": flops_per_token,
        "mfu": model_flops_utilization(flops_per_token, result.train_tokens, result.train_seconds, peak),
        "peak_flops": peak, "peak_flops_source": peak_source,
        **{k: v for k, v in res.items() if k not in ("device", "sample_interval_s", "n_samples")},
        "artifact_size_mb": dir_size_bytes(out) / MB,
        "base_model_size_mb": base_size / MB if base_size else None,
        "examples": counts,
    }
    monitor.write_csv(metrics_dir / "train_timeseries.csv")
    write_json(metrics_dir / "train.json", report)
    checkpointer.finish()
    print(f"{r.model}/{run_id}: {trainable:,} trainable ({report['trainable_percent']:.3f}%), "
          f"{result.steps} steps in {result.train_seconds:.0f}s, {report['tokens_per_s']:.0f} tok/s, "
          f"loss {result.final_loss:.3f}, val loss {val_loss:.3f}")


if __name__ == "__main__":
    main(run)
