"""Which GPU a stage takes when ``run.device`` is ``auto``.

DVC's experiment queue runs ``--jobs N`` workers but does not assign them devices, so without this
every worker would take ``cuda:0`` and the other GPUs would idle (or ``cuda:0`` would run out of
memory). The policy, in order:

1. no CUDA → ``cpu``;
2. a launcher already placed this process (torchrun / ``accelerate launch``: ``WORLD_SIZE`` and
   ``LOCAL_RANK`` set) → ``cuda:<LOCAL_RANK>``: the launcher owns placement, a lock would fight it;
3. one visible GPU → ``cuda:0`` (nothing to choose; processes share it, as before);
4. several → the GPU no other ftbench process holds, most free memory first (NVML: a GPU that some
   other program fills ranks last). "Holds" is an exclusive ``flock`` on ``<GPU UUID>.lock`` in
   :func:`lock_dir`, kept for the life of the process; the kernel drops it when the process exits or
   is killed, so a crashed run never leaves a GPU reserved.
   When every GPU is held, the stage **waits** (polling, with a log line a minute naming the holders)
   rather than sharing a GPU: ``--jobs`` larger than the GPU count then means "queue the rest", not
   "run two trainings on one GPU and maybe run out of memory".

The lock is keyed by the GPU's NVML UUID, so processes with different ``CUDA_VISIBLE_DEVICES`` still
agree on which physical GPU is taken (without NVML: by the NVML index that ``CUDA_VISIBLE_DEVICES``
maps to). The chosen GPU also becomes torch's current device, because the resource monitor and the
peak-memory figures read the current device. CUDA ordinals are mapped to NVML indices as in
:func:`ftbench.resources.nvml_index`, which assumes CUDA numbers GPUs in PCI-bus order: on a node
mixing GPU models set ``CUDA_DEVICE_ORDER=PCI_BUS_ID``.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import torch

from ftbench.io import ConfigError
from ftbench.registry import cache_dir
from ftbench.resources import _load_pynvml, nvml_index

log = logging.getLogger(__name__)

POLL_S = 5.0  # how often a waiting stage retries the locks
LOG_EVERY_S = 60.0  # how often it says that it is still waiting

# The GPU this process took and the open lock file that holds it; never closed on purpose (the OS
# releases the lock when the process ends). A second call in the same process returns the same GPU.
_lease: tuple[str, IO[str]] | None = None


@dataclass(frozen=True)
class Gpu:
    cuda_index: int  # torch's ordinal (counts only CUDA_VISIBLE_DEVICES)
    key: str  # lock-file name: NVML UUID, or "gpu<NVML index>" without NVML
    free_bytes: int | None  # NVML free memory; None when NVML could not say


def lock_dir() -> Path:
    """``$FTBENCH_LOCK_DIR``, else ``<ftbench cache>/gpu-locks``: per user by default; point every user of a
    shared node at one world-writable directory to make their runs avoid each other's GPUs too."""
    return Path(os.environ.get("FTBENCH_LOCK_DIR") or cache_dir() / "gpu-locks")


def auto_device() -> str:
    """The device ``run.device: auto`` resolves to in this process (policy: module docstring)."""
    global _lease
    if not torch.cuda.is_available():
        return "cpu"
    count = torch.cuda.device_count()
    rank = _launcher_rank()
    if rank is not None:
        if rank >= count:
            raise ConfigError(f"LOCAL_RANK={rank} but only {count} GPU(s) are visible",
                              fix="launch at most one process per visible GPU (--nproc_per_node / num_processes)")
        return f"cuda:{rank}"
    if count == 1:
        return "cuda:0"
    if _lease is None:
        _lease = claim_gpu(count)
        torch.cuda.set_device(_lease[0])
    return _lease[0]


def _launcher_rank() -> int | None:
    """``LOCAL_RANK`` when torchrun / accelerate placed this process (any world size: accelerate puts a
    single launched process on ``cuda:0`` too), else ``None``."""
    try:
        rank = os.environ.get("LOCAL_RANK")
        return int(rank) if "WORLD_SIZE" in os.environ and rank is not None else None
    except ValueError:
        return None


def visible_gpus(count: int) -> list[Gpu]:
    """The ``count`` CUDA devices with their lock key and free memory (NVML where it answers)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    nvml = _load_pynvml()
    started = False
    if nvml is not None:
        try:
            nvml.nvmlInit()
            started = True
        except Exception as e:  # no driver library, or a container without NVML
            log.warning("NVML unavailable, GPUs picked without free-memory figures: %s", e)
    gpus = []
    for i in range(count):
        index = nvml_index(i, visible)
        key, free = f"gpu{index}", None
        if started:
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                uuid = nvml.nvmlDeviceGetUUID(handle)
                key = uuid.decode() if isinstance(uuid, bytes) else str(uuid)
                free = int(nvml.nvmlDeviceGetMemoryInfo(handle).free)
            except Exception as e:
                log.warning("NVML could not describe GPU %d: %s", index, e)
        gpus.append(Gpu(i, key, free))
    if started:
        try:
            nvml.nvmlShutdown()
        except Exception as e:
            log.warning("NVML shutdown failed: %s", e)
    return gpus


def try_lock(gpu: Gpu, directory: Path) -> IO[str] | None:
    """The open lock file of ``gpu`` if this call took its lock, ``None`` if another process holds it.

    ``flock`` belongs to the open file description, so the lock lives exactly as long as this file
    object (and the process) does. The holder's pid is written in the file for the waiting message.
    """
    directory.mkdir(parents=True, exist_ok=True)
    # not "w": truncating before the lock is taken would erase the holder's pid
    fh = os.fdopen(os.open(directory / f"{gpu.key}.lock", os.O_RDWR | os.O_CREAT, 0o666), "r+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        return None
    fh.truncate(0)
    fh.write(f"{os.getpid()}\n")
    fh.flush()
    return fh


def claim_gpu(count: int, directory: Path | None = None) -> tuple[str, IO[str]]:
    """Lock the free GPU with the most free memory among ``count``; wait while all are held."""
    directory = directory or lock_dir()
    waiting_since = last_log = None
    while True:
        # most free memory first; unknown counts as none; ties keep CUDA order (sort is stable)
        gpus = sorted(visible_gpus(count), key=lambda g: g.free_bytes or 0, reverse=True)
        for gpu in gpus:
            fh = try_lock(gpu, directory)
            if fh is not None:
                log.info("run.device auto: cuda:%d (%s, %s MiB free)", gpu.cuda_index, gpu.key,
                         "?" if gpu.free_bytes is None else gpu.free_bytes // 2**20)
                return f"cuda:{gpu.cuda_index}", fh
        now = time.monotonic()
        waiting_since = waiting_since or now
        if last_log is None or now - last_log >= LOG_EVERY_S:
            holders = ", ".join(_holder(directory / f"{g.key}.lock") for g in gpus)
            log.warning("run.device auto: all %d GPUs are held by other ftbench processes (pids %s); waiting "
                        "%.0f s so far (locks in %s)", count, holders, now - waiting_since, directory)
            last_log = now
        time.sleep(POLL_S)


def _holder(path: Path) -> str:
    try:
        return path.read_text().strip() or "?"
    except OSError:
        return "?"
