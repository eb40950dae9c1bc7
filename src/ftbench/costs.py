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


def train_report(model: Any, result: TrainResult, *, identity: dict, cfg: TrainParams, lr: float,
                 val_loss: float | None, resources: dict, peak: PeakFlops, artifact: Path,
                 base_size_bytes: int | None, train_data_sha256: str, examples: dict) -> dict:
    """The train.json of one run.

    Throughput and MFU divide the whole run's tokens by the whole run's loop time (both carried across
    a resume), and so does energy (each checkpoint stores the energy used so far). FLOPs count the output
    head only at the labelled positions, where it ran. Memory and power cover this process: after a resume,
    the part since the resume.
    """
    energy_j = resources.get("energy_j")  # this attempt; add what the attempts before a resume used
    if energy_j is not None:
        energy_j = None if result.energy_before_resume_j is None else energy_j + result.energy_before_resume_j
    trainable = count_trainable(model)
    total = base_param_count(model.config)
    flops = training_flops(model, result.train_tokens, result.answer_tokens)
    return {
        **identity, "device": resources["device"],
        "trainable_params": trainable, "total_params": total, "trainable_percent": 100.0 * trainable / total,
        **result_dict(result), "lr": lr, "val_loss": val_loss,
        # the regime, so a reader can check that methods differ only in what the method changes
        **regime(model), "max_grad_norm": cfg.max_grad_norm, "group_by_length": cfg.group_by_length,
        "batch_size": cfg.batch_size, "grad_accum": cfg.grad_accum, "global_batch": cfg.batch_size * cfg.grad_accum,
        "train_data_sha256": train_data_sha256,
        "tokens_per_s": result.train_tokens / result.train_seconds,
        "samples_per_s": result.samples / result.train_seconds,
        "train_flops": flops,
        "train_flops_per_token": flops / result.train_tokens,
        "mfu": model_flops_utilization(flops / result.train_tokens, result.train_tokens, result.train_seconds,
                                       peak.flops),
        "peak_flops": peak.flops, "peak_flops_source": peak.source, "peak_flops_key": peak.key,
        **{k: v for k, v in resources.items() if k not in ("device", "sample_interval_s", "n_samples")},
        "energy_j": energy_j, "energy_wh": None if energy_j is None else energy_j / 3600.0,
        "artifact_size_mb": dir_size_bytes(artifact) / MB,
        "base_model_size_mb": base_size_bytes / MB if base_size_bytes else None,
        "examples": examples,
        "env": environment(),
    }
