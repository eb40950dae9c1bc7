"""train.json: what one training run cost, and the regime it ran under, from the loop's result, the
resource monitor's summary and the trained model.

Kept out of the stage so that every figure has one definition (tests build the same report), and
out of ``training.py`` so that the loop does not depend on the model registry or the monitor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ftbench.io import dir_size_bytes
from ftbench.methods import count_trainable, regime
from ftbench.params import TrainParams
from ftbench.registry import base_param_count
from ftbench.resources import PeakFlops, environment, model_flops_utilization, training_flops
from ftbench.training import TrainResult, result_dict

MB = 1024 * 1024
#: The run's DVC metric (dvc.yaml ``metrics:``), beside train.json: only what a person compares across
#: experiments, so that ``dvc exp show`` stays readable.
COST_JSON = "cost.json"


RANK_FIELDS = ("peak_rss_mb", "gpu_peak_memory_allocated_mb", "gpu_peak_memory_reserved_mb", "gpu_peak_memory_used_mb",
               "gpu_power_mean_w", "gpu_power_peak_w", "energy_j", "energy_source")


def combine_ranks(summaries: list[dict]) -> dict:
    """One resource summary for a run of several processes (each monitored its own process and GPU).

    Memory is what one device needed: the maximum over ranks (each rank's figure is kept under ``ranks``).
    Power and energy add up over the GPUs (None if any rank could not measure it); ``gpu_power_peak_w`` is then
    the sum of each GPU's peak, an upper bound of the peak of the total. One process: unchanged.
    """
    if len(summaries) == 1:
        return summaries[0]

    def total(key: str) -> float | None:
        values = [s.get(key) for s in summaries]
        return None if any(v is None for v in values) else sum(values)

    def peak(key: str) -> float | None:
        values = [s[key] for s in summaries if s.get(key) is not None]
        return max(values) if values else None

    combined = {**summaries[0], **{k: peak(k) for k in RANK_FIELDS if k.startswith(("peak_", "gpu_peak"))}}
    # NVML figures are per GPU: they add up. RAPL is the whole machine's package counter, which every rank
    # reads alike: rank 0's reading is the run's (one machine; several machines are not measured on the CPU).
    machine_wide = summaries[0].get("energy_source") == "rapl"
    combined.update(gpu_power_mean_w=total("gpu_power_mean_w"), gpu_power_peak_w=total("gpu_power_peak_w"),
                    energy_j=summaries[0].get("energy_j") if machine_wide else total("energy_j"))
    combined["energy_wh"] = None if combined["energy_j"] is None else combined["energy_j"] / 3600.0
    combined["ranks"] = [{"rank": i, **{k: s.get(k) for k in RANK_FIELDS}} for i, s in enumerate(summaries)]
    return combined


def train_report(model: Any, result: TrainResult, *, identity: dict, cfg: TrainParams, lr: float,
                 val_loss: float | None, resources: dict, peak: PeakFlops, artifact: Path,
                 base_size_bytes: int | None, train_data_sha256: str, examples: dict,
                 distributed: str = "none") -> dict:
    """The train.json of one run.

    Throughput and MFU divide the whole run's tokens by the whole run's loop time (both carried across
    a resume), and so does energy (each checkpoint stores the energy used so far). FLOPs count the body at
    the positions it ran (a shared prompt prefix once per micro-batch) and the output head only at the
    labelled positions, where it ran; tokens/s counts the examples' tokens (the work, however computed).
    Memory and power cover this process (with several,
    :func:`combine_ranks` of theirs): after a resume, the part since the resume.
    """
    energy_j = resources.get("energy_j")  # this attempt; add what the attempts before a resume used
    if energy_j is not None:
        energy_j = None if result.energy_before_resume_j is None else energy_j + result.energy_before_resume_j
    trainable = count_trainable(model)
    total = base_param_count(model.config)
    # the body ran the computed positions (a shared prefix once per micro-batch), not every example's tokens
    flops = training_flops(model, result.computed_tokens or result.train_tokens, result.answer_tokens)
    return {
        **identity, "device": resources["device"], "distributed": distributed,
        "trainable_params": trainable, "total_params": total, "trainable_percent": 100.0 * trainable / total,
        **result_dict(result), "lr": lr, "val_loss": val_loss,
        # the regime, so a reader can check that methods differ only in what the method changes
        **regime(model), "max_grad_norm": cfg.max_grad_norm, "group_by_length": cfg.group_by_length,
        "batch_size": cfg.batch_size, "grad_accum": cfg.grad_accum,  # per process; global_batch: all of them
        "micro_batch_tokens": cfg.micro_batch_tokens,
        "train_data_sha256": train_data_sha256,
        "tokens_per_s": result.train_tokens / result.train_seconds,
        "samples_per_s": result.samples / result.train_seconds,
        "train_flops": flops,
        "train_flops_per_token": flops / result.train_tokens,
        # tokens are summed over the processes, so the peak is one device's times their number
        "mfu": model_flops_utilization(flops / result.train_tokens, result.train_tokens, result.train_seconds,
                                       peak.flops * result.world_size),
        "peak_flops": peak.flops, "peak_flops_source": peak.source, "peak_flops_key": peak.key,
        **{k: v for k, v in resources.items() if k not in ("device", "sample_interval_s", "n_samples")},
        "energy_j": energy_j, "energy_wh": None if energy_j is None else energy_j / 3600.0,
        "artifact_size_mb": dir_size_bytes(artifact) / MB,
        "base_model_size_mb": base_size_bytes / MB if base_size_bytes else None,
        "examples": examples,
        "env": environment(),
    }


def cost_metrics(report: dict) -> dict:
    """cost.json from a train.json: training time, throughput, peak memory and energy (null when not measured).

    ``peak_memory_mb`` is the GPU's allocated peak when the run used a GPU, else the process's peak RSS: the
    figure the report's front ranks (``ftbench.report.compare``; tests/test_pipeline.py checks both agree).
    """
    gpu = report.get("gpu_peak_memory_allocated_mb")
    return {"train_seconds": report.get("train_seconds"), "samples_per_s": report.get("samples_per_s"),
            "peak_memory_mb": gpu if gpu is not None else report.get("peak_rss_mb"),
            "energy_wh": report.get("energy_wh")}
