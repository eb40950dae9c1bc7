"""Stage train: fine-tune one (model, method, seed) and record what it cost.

    python stages/train.py --model smollm2-135m --method lora --seed 42

Writes models/<model>/<method>-s<seed>/ (only what the method must ship), and under
metrics/runs/<model>/<method>-s<seed>/: train.json (cost figures and regime), train_timeseries.csv
(power/memory samples) and dvclive/ (loss curve). Resumes from checkpoints/ after a crash.

With ``train.launcher`` set (accelerate or torchrun) the stage starts itself again under that launcher and
waits: each launched process trains its share, rank 0 alone writes (see ftbench.distributed).
"""

import contextlib
import dataclasses

from ftbench.costs import COST_JSON, combine_ranks, cost_metrics, train_report
from ftbench.distributed import relaunch, start
from ftbench.io import atomic_dir, read_jsonl, write_json
from ftbench.methods import prepare, save_trained
from ftbench.registry import base_model_size_bytes, load_tokenizer, pick_dtype
from ftbench.resources import ResourceMonitor, peak_flops
from ftbench.stage import checkpoint_dir, main, model_dir, model_run, run_metrics_dir
from ftbench.training import Checkpointer, encode_examples, eval_loss, fingerprint, seed_everything, train


def run() -> None:
    # Under a launcher, this process becomes it before a device is picked (a lock on a GPU it would not use)
    r = model_run(__doc__, tuned=True, before_device=lambda params: relaunch(params.train))
    params, tcfg = r.params, r.params.train
    dist = start(r.device, tcfg)
    device = dist.device or r.device  # a launched process trains on the device its launcher gave it
    # First, before anything is loaded, and cached per machine: every run divides by the same peak.
    # Rank 0 measures it; the others read the cache it wrote.
    if dist.is_main:
        peak = peak_flops(device, r.dtype, params.monitor.peak_flops)
    dist.barrier()
    if not dist.is_main:
        peak = peak_flops(device, r.dtype, params.monitor.peak_flops)
    tokenizer = load_tokenizer(r.model, r.spec)
    counts: dict = {}
    encode = dict(max_seq_len=tcfg.max_seq_len, style=params.eval.prompt, system_prompt=params.eval.system_prompt,
                  completion_only=tcfg.completion_only_loss, counts=counts)
    train_data = encode_examples(tokenizer, read_jsonl("data/processed/train.jsonl"), **encode)
    val_data = encode_examples(tokenizer, read_jsonl("data/processed/validation.jsonl"), **encode)
    lr = params.lr_for(r.method)
    # world size changes the global batch (batch_size is per process): a checkpoint of another is not resumed
    run_key = {**fingerprint(model=dataclasses.asdict(r.spec), method=r.method, method_cfg=dataclasses.asdict(r.cfg),
                             train=tcfg, prompt_style=params.eval.prompt, system_prompt=params.eval.system_prompt,
                             seed=r.seed, lr=lr, device=r.device, dtype=r.dtype, data=train_data),
               **({"world_size": dist.world_size, "distributed": dist.kind} if dist.active else {})}
    checkpointer = Checkpointer(checkpoint_dir(r.model, r.run_id), run_key)
    metrics_dir = run_metrics_dir(r.model, r.run_id)

    from dvclive import Live

    live = Live(dir=str(metrics_dir / "dvclive"), dvcyaml=None, save_dvc_exp=False, report=None) \
        if dist.is_main else contextlib.nullcontext()
    with live:
        def log(step: int, values: dict) -> None:
            live.step = step
            for k, v in values.items():
                live.log_metric(f"train/{k}", v)

        with ResourceMonitor(params.monitor.interval_s) as monitor:
            seed_everything(r.seed)  # adapter initialisation draws from the RNG too
            model = prepare(r.method, r.model, r.spec, r.cfg, dtype=r.dtype, device=device,
                            trainable_dtype=pick_dtype(tcfg.trainable_dtype, device),
                            gradient_checkpointing=tcfg.gradient_checkpointing, fsdp=dist.kind == "fsdp")
            trainable = [n for n, p in model.named_parameters() if p.requires_grad]  # names before any wrapping
            # the CPU's energy counter (RAPL) is the machine's: rank 0 reads it for all, the others add nothing
            energy = monitor.energy_so_far_j if dist.is_main or device.startswith("cuda") else lambda: 0.0
            result = train(model, train_data, tcfg, lr=lr, seed=r.seed, pad_id=tokenizer.pad_token_id,
                           device=device, checkpointer=checkpointer, log=log, energy_j=energy, dist=dist)
        val_loss = eval_loss(model, val_data, batch_size=params.eval.batch_size, pad_id=tokenizer.pad_token_id,
                             device=device, dist=dist, share_prefix=tcfg.share_prefix)
        if dist.is_main:
            live.log_metric("val/loss", val_loss if val_loss is not None else float("nan"), plot=False)

    resources = combine_ranks(dist.gather(monitor.summary()))
    out = model_dir(r.model, r.run_id)
    state = dist.full_state_dict(dist.wrapped)  # FSDP / ZeRO-3: every rank joins the gather, rank 0 gets it
    if dist.is_main:
        with atomic_dir(out) as tmp:
            save_trained(model, r.method, tmp, {"model": r.model, "method": r.method, "seed": r.seed,
                                                "config": dataclasses.asdict(r.cfg)},
                         trained=None if state is None else {n: state[n] for n in trainable})
    with dist.full_params(dist.wrapped):  # whole parameters to count (FSDP, ZeRO-3); rank 0 writes
        if dist.is_main:
            report = train_report(model, result, identity={"model": r.model, "method": r.method, "seed": r.seed},
                                  cfg=tcfg, lr=lr, val_loss=val_loss, resources=resources, peak=peak, artifact=out,
                                  base_size_bytes=base_model_size_bytes(r.model, r.spec),
                                  train_data_sha256=run_key["train_data_sha256"], examples=counts,
                                  distributed=dist.kind)
    if dist.is_main:
        monitor.write_csv(metrics_dir / "train_timeseries.csv")
        write_json(metrics_dir / "train.json", report)
        write_json(metrics_dir / COST_JSON, cost_metrics(report))  # the few figures `dvc exp show` compares
        checkpointer.finish()
        print(f"{r.model}/{r.run_id}: {report['trainable_params']:,} trainable ({report['trainable_percent']:.3f}%), "
              f"{result.steps} steps in {result.train_seconds:.0f}s on {result.world_size} process(es), "
              f"{report['tokens_per_s']:.0f} tok/s, loss {result.final_loss:.3f}, val loss {val_loss:.3f}")
    dist.barrier()


if __name__ == "__main__":
    main(run)
