"""Stage train: fine-tune one (model, method, seed) and record what it cost.

    python stages/train.py --model smollm2-135m --method lora --seed 42

Writes models/<model>/<method>-s<seed>/ (only what the method must ship), and under
metrics/runs/<model>/<method>-s<seed>/: train.json (cost figures and regime), train_timeseries.csv
(power/memory samples) and dvclive/ (loss curve). Resumes from checkpoints/ after a crash.
"""

import dataclasses

from ftbench.costs import train_report
from ftbench.io import atomic_dir, read_jsonl, write_json
from ftbench.methods import prepare, save_trained
from ftbench.registry import base_model_size_bytes, load_tokenizer, pick_dtype
from ftbench.resources import ResourceMonitor, peak_flops
from ftbench.stage import checkpoint_dir, main, model_dir, model_run, run_metrics_dir
from ftbench.training import Checkpointer, encode_examples, eval_loss, fingerprint, seed_everything, train


def run() -> None:
    r = model_run(__doc__, tuned=True)
    params, tcfg = r.params, r.params.train
    # First, before anything is loaded, and cached per machine: every run divides by the same peak.
    peak = peak_flops(r.device, r.dtype, params.monitor.peak_flops)
    tokenizer = load_tokenizer(r.model, r.spec)
    counts: dict = {}
    encode = dict(max_seq_len=tcfg.max_seq_len, style=params.eval.prompt, system_prompt=params.eval.system_prompt,
                  completion_only=tcfg.completion_only_loss, counts=counts)
    train_data = encode_examples(tokenizer, read_jsonl("data/processed/train.jsonl"), **encode)
    val_data = encode_examples(tokenizer, read_jsonl("data/processed/validation.jsonl"), **encode)
    lr = params.lr_for(r.method)
    run_key = fingerprint(model=dataclasses.asdict(r.spec), method=r.method, method_cfg=dataclasses.asdict(r.cfg),
                          train=tcfg, prompt_style=params.eval.prompt, system_prompt=params.eval.system_prompt,
                          seed=r.seed, lr=lr, device=r.device, dtype=r.dtype, data=train_data)
    checkpointer = Checkpointer(checkpoint_dir(r.model, r.run_id), run_key)
    metrics_dir = run_metrics_dir(r.model, r.run_id)

    from dvclive import Live

    with Live(dir=str(metrics_dir / "dvclive"), dvcyaml=None, save_dvc_exp=False, report=None) as live:
        def log(step: int, values: dict) -> None:
            live.step = step
            for k, v in values.items():
                live.log_metric(f"train/{k}", v)

        with ResourceMonitor(params.monitor.interval_s) as monitor:
            seed_everything(r.seed)  # adapter initialisation draws from the RNG too
            model = prepare(r.method, r.model, r.spec, r.cfg, dtype=r.dtype, device=r.device,
                            trainable_dtype=pick_dtype(tcfg.trainable_dtype, r.device),
                            gradient_checkpointing=tcfg.gradient_checkpointing)
            result = train(model, train_data, tcfg, lr=lr, seed=r.seed, pad_id=tokenizer.pad_token_id,
                           device=r.device, checkpointer=checkpointer, log=log, energy_j=monitor.energy_so_far_j)
        val_loss = eval_loss(model, val_data, batch_size=params.eval.batch_size, pad_id=tokenizer.pad_token_id,
                             device=r.device)
        live.log_metric("val/loss", val_loss if val_loss is not None else float("nan"), plot=False)

    out = model_dir(r.model, r.run_id)
    with atomic_dir(out) as tmp:
        save_trained(model, r.method, tmp, {"model": r.model, "method": r.method, "seed": r.seed,
                                            "config": dataclasses.asdict(r.cfg)})
    report = train_report(model, result, identity={"model": r.model, "method": r.method, "seed": r.seed}, cfg=tcfg,
                          lr=lr, val_loss=val_loss, resources=monitor.summary(), peak=peak, artifact=out,
                          base_size_bytes=base_model_size_bytes(r.model, r.spec),
                          train_data_sha256=run_key["train_data_sha256"], examples=counts)
    monitor.write_csv(metrics_dir / "train_timeseries.csv")
    write_json(metrics_dir / "train.json", report)
    checkpointer.finish()
    print(f"{r.model}/{r.run_id}: {report['trainable_params']:,} trainable ({report['trainable_percent']:.3f}%), "
          f"{result.steps} steps in {result.train_seconds:.0f}s, {report['tokens_per_s']:.0f} tok/s, "
          f"loss {result.final_loss:.3f}, val loss {val_loss:.3f}")


if __name__ == "__main__":
    main(run)
