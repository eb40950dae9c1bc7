"""One training run across processes: accelerate's ``Accelerator`` around ftbench's explicit loop.

The loop in :mod:`ftbench.training` stays what it is; this module gives it the few operations that differ
when several processes train one model (DDP, FSDP or DeepSpeed, as the accelerate config file says):
wrapping the model and optimizer, backward, gradient sync across micro-batches, clipping, sums over ranks,
and "only rank 0 writes". In one process (``train.launcher: none``) every operation is the plain
PyTorch call, so a laptop run is the run it always was.

Batch semantics follow Hugging Face's: ``train.batch_size`` is per process, so a step's global batch is
``batch_size × grad_accum × world_size``. Each global micro-batch of the seeded plan is dealt out to the
ranks (rank r takes every world_size-th example), and each rank divides its summed answer-token loss by
the labelled tokens of the *whole* global step, times the world size that DDP/FSDP's gradient averaging
divides by. The gradient is then that of one process holding the whole global batch: a 2-process run
matches a 1-process run of twice the batch size up to float error (tested on the CPU with gloo).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ftbench.io import ConfigError
from ftbench.params import TrainParams

# Set in the processes a launcher starts, so that a stage does not launch itself again (accelerate's simple
# launcher, used for one process, sets no WORLD_SIZE).
LAUNCHED_ENV = "FTBENCH_LAUNCHED"


def launched() -> bool:
    """True inside a process started by torchrun / accelerate launch (or by ftbench through one)."""
    return bool(os.environ.get(LAUNCHED_ENV) or os.environ.get("WORLD_SIZE"))


def launch_command(cfg: TrainParams, argv: list[str]) -> list[str] | None:
    """The command that runs ``argv`` (a stage script and its arguments) under ``train.launcher``.

    None when no launcher is configured or this process was already launched. ``accelerate`` runs
    ``accelerate launch --config_file <train.accelerate_config>`` (GPU configs: DDP, FSDP, DeepSpeed);
    ``torchrun`` runs ``torch.distributed.run --standalone`` with ``train.num_processes`` processes on this
    machine, which is also how several CPU processes train (gloo): accelerate's own CPU launcher needs MPI.
    """
    if cfg.launcher == "none" or launched():
        return None
    if cfg.launcher == "accelerate":
        config = Path(cfg.accelerate_config or "")
        if not config.is_file():
            raise ConfigError(f"train.accelerate_config '{cfg.accelerate_config}' is not a file",
                              fix="name one of configs/accelerate/*.yaml (or your own `accelerate config` file)")
        _check_config(config, cfg)
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config)]
        if cfg.num_processes:
            cmd += ["--num_processes", str(cfg.num_processes)]
        return [*cmd, *argv]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
            str(cfg.num_processes or 1), *argv]


def _check_config(config: Path, cfg: TrainParams) -> None:
    """What the accelerate config cannot run, said once here rather than by every rank after loading."""
    import yaml

    try:
        settings = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{config}: not a readable accelerate config ({e})",
                          fix="write one with `accelerate config --config_file <path>`") from None
    if not isinstance(settings, dict):
        raise ConfigError(f"{config}: not an accelerate config (a YAML mapping)", fix="see configs/accelerate/")
    if settings.get("distributed_type") == "DEEPSPEED":
        check_deepspeed(cfg, str(config))


def check_deepspeed(cfg: TrainParams, where: str) -> None:
    """What DeepSpeed cannot run: its engine steps the optimizer inside each backward pass, so a batch can
    be neither accumulated (``grad_accum``) nor cut into several backward passes (``micro_batch_tokens``).
    Checked before launch (``where`` = the accelerate config) and again by :meth:`Dist.wrap` (a process
    launched by hand)."""
    if cfg.grad_accum != 1:
        raise ConfigError(f"{where} is DeepSpeed, which steps inside backward: train.grad_accum must be 1, "
                          f"not {cfg.grad_accum}", fix="raise train.batch_size or the number of processes instead")
    if cfg.micro_batch_tokens is not None:
        raise ConfigError(f"{where} is DeepSpeed, which steps inside backward: train.micro_batch_tokens (a batch as "
                          f"several backward passes) must be null, not {cfg.micro_batch_tokens}",
                          fix="set train.micro_batch_tokens: null (lower train.batch_size for less memory)")


def relaunch(cfg: TrainParams) -> None:
    """If a launcher is configured, become it (``exec``): it runs this stage in its processes and exits with
    their status, so DVC sees one command, and a signal to the stage (``dvc queue kill``) reaches the launcher.
    Returns only when no launcher is configured or this process was already launched."""
    cmd = launch_command(cfg, sys.argv)
    if cmd is None:
        return
    print("launching: " + " ".join(cmd), file=sys.stderr, flush=True)
    sys.stdout.flush()
    os.execve(cmd[0], cmd, {**os.environ, LAUNCHED_ENV: "1"})


@dataclass
class Dist:
    """The processes of one run; ``accelerator`` is None for a plain single-process run."""

    accelerator: Any = None
    wrapped: Any = None  # the model as the backend wrapped it (set by training.train)

    @property
    def active(self) -> bool:
        return self.accelerator is not None

    @property
    def world_size(self) -> int:
        return self.accelerator.num_processes if self.active else 1

    @property
    def rank(self) -> int:
        return self.accelerator.process_index if self.active else 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def kind(self) -> str:
        """none | ddp | fsdp | deepspeed (what train.json records)."""
        if not self.active:
            return "none"
        name = self.accelerator.distributed_type.name
        return {"FSDP": "fsdp", "DEEPSPEED": "deepspeed"}.get(name, "ddp" if self.world_size > 1 else "none")

    @property
    def sharded(self) -> bool:
        """Model or optimizer state split across ranks: checkpoints go through accelerate's save_state."""
        return self.kind in ("fsdp", "deepspeed")

    @property
    def device(self) -> str | None:
        return str(self.accelerator.device) if self.active else None

    def barrier(self) -> None:
        if self.active:
            self.accelerator.wait_for_everyone()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order (picklable objects; on all ranks)."""
        if not self.active or self.world_size == 1:
            return [obj]
        from accelerate.utils import gather_object

        return gather_object([obj])

    def sum(self, values: dict[str, float]) -> dict[str, float]:
        """Sum each value over the ranks (on all ranks)."""
        if not self.active or self.world_size == 1:
            return values
        keys = sorted(values)
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=self.accelerator.device)
        t = self.accelerator.reduce(t, reduction="sum")
        return {k: float(v) for k, v in zip(keys, t.tolist(), strict=True)}

    def wrap(self, module: torch.nn.Module, make_optimizer: Callable[[list], torch.optim.Optimizer],
             cfg: TrainParams) -> tuple[Any, torch.optim.Optimizer]:
        """The model wrapped for the backend and an optimizer over its trainable parameters.

        FSDP flattens parameters, so its optimizer is built after the wrap; DeepSpeed builds its engine from
        model and optimizer together. FSDP wraps every decoder block, and with peft every adapter layer on its
        own (peft's policy), so that no FSDP unit mixes frozen and trainable or 4-bit and float weights.
        """
        trainable = lambda m: [p for p in m.parameters() if p.requires_grad]  # noqa: E731
        if not self.active:
            return module, make_optimizer(trainable(module))
        acc = self.accelerator
        if self.kind == "deepspeed":
            ds = acc.state.deepspeed_plugin.deepspeed_config
            check_deepspeed(cfg, "this accelerate run")
            ds["train_micro_batch_size_per_gpu"] = cfg.batch_size
            ds["gradient_accumulation_steps"] = 1
            ds["gradient_clipping"] = cfg.max_grad_norm or 0.0
            return acc.prepare(module, make_optimizer(trainable(module)))
        if self.kind == "fsdp":
            inner = module.model
            io = (inner.get_input_embeddings(), inner.get_output_embeddings())
            if not hasattr(inner, "peft_config") and any(p.requires_grad for m in io for p in m.parameters()):
                raise ConfigError("FSDP cannot train the embeddings or head: they share the root unit with frozen "
                                  "weights", fix="set methods.top_layer.lm_head: false, or use the DDP config")
            if hasattr(inner, "peft_config"):
                from peft.utils.other import fsdp_auto_wrap_policy

                acc.state.fsdp_plugin.auto_wrap_policy = fsdp_auto_wrap_policy(inner)
        wrapped = acc.prepare_model(module)
        return wrapped, acc.prepare_optimizer(make_optimizer(trainable(wrapped)))

    def unwrap(self, model: Any) -> Any:
        return self.accelerator.unwrap_model(model) if self.active else model

    def backward(self, loss: torch.Tensor) -> None:
        if self.active:
            self.accelerator.backward(loss)
        else:
            loss.backward()

    def no_sync(self, model: Any, skip: bool) -> contextlib.AbstractContextManager:
        """Skip the gradient all-reduce of a micro-batch that is not the step's last (``skip``)."""
        if skip and self.active and self.world_size > 1 and self.kind != "deepspeed":
            return self.accelerator.no_sync(model)
        return contextlib.nullcontext()

    def clip_grad_norm_(self, model: Any, params: list, max_norm: float) -> None:
        if not self.active:
            torch.nn.utils.clip_grad_norm_(params, max_norm)
        elif self.kind == "fsdp":
            model.clip_grad_norm_(max_norm)  # FSDP's own: the norm over every rank's shard
        elif self.kind != "deepspeed":  # DeepSpeed clips inside its step (gradient_clipping above)
            self.accelerator.clip_grad_norm_(params, max_norm)

    @contextlib.contextmanager
    def full_params(self, model: Any) -> Iterator[None]:
        """Inside: every rank's module holds its full (unsharded) parameters, e.g. to count or save them."""
        if self.kind == "fsdp":
            from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

            with FSDP.summon_full_params(model, writeback=False):  # offload_to_cpu fails under NO_SHARD (1 GPU)
                yield
        elif self.kind == "deepspeed" and self.accelerator.state.deepspeed_plugin.zero_stage == 3:
            import deepspeed

            with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None):
                yield
        else:
            yield

    def full_state_dict(self, model: Any) -> dict | None:
        """The full weights by name on rank 0 (None elsewhere) when parameters are sharded; None otherwise,
        when the model's own parameters are whole. Every rank must call it (the gather is collective)."""
        if not self.sharded:
            return None
        state = self.accelerator.get_state_dict(model)  # AnswerLoss keeps the causal LM as .model
        return {k.removeprefix("model."): v for k, v in state.items()} if self.is_main else None

    def save_sharded(self, directory: Path, step: int) -> str:
        """accelerate's save_state (every rank writes its shard) into ``accelerate-<step>/``, via a temporary
        folder renamed when complete. The caller then writes state.pt naming it, and only after that are
        older folders removed (:meth:`drop_sharded`): at every moment state.pt names a complete folder."""
        name = f"accelerate-{step}"
        tmp = directory / f"{name}.tmp"
        if self.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        self.barrier()
        self.accelerator.save_state(str(tmp))
        self.barrier()
        if self.is_main:
            shutil.rmtree(directory / name, ignore_errors=True)
            tmp.replace(directory / name)
        self.barrier()
        return name

    def drop_sharded(self, directory: Path, keep: str) -> None:
        if self.is_main:
            for old in directory.glob("accelerate-*"):
                if old.name != keep:
                    shutil.rmtree(old, ignore_errors=True)

    def load_sharded(self, directory: Path, name: str) -> None:
        self.accelerator.load_state(str(directory / name))


def start(device: str, cfg: TrainParams) -> Dist:
    """The run's processes: an Accelerator when ``train.launcher`` launched this process, else one plain
    process (also when the environment happens to carry WORLD_SIZE, e.g. ``torchrun dvc repro``)."""
    if cfg.launcher == "none" or not launched():
        return Dist()
    from accelerate import Accelerator

    return Dist(Accelerator(cpu=device == "cpu"))
