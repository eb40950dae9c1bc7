"""Measure what a run costs: time, memory, CPU/GPU load and energy, plus MFU and latency helpers.

The comparison between fine-tuning techniques is only as honest as these numbers, so the rule
here is: report what was measured and ``None`` for what could not be. A CPU-only machine gets
``None`` for every GPU figure; a machine whose RAPL counters are root-only (the default on most
kernels since 2020) gets ``None`` energy rather than an estimate from a nominal TDP.

``ResourceMonitor`` samples in a daemon thread so that the training loop is not instrumented by
hand; everything the sampler does is guarded, because a failed NVML call must never kill a run
that has been training for an hour.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import logging
import math
import os
import platform
import re
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

import numpy as np
import psutil
import torch

from ftbench.io import write_json, write_text
from ftbench.registry import cache_dir

log = logging.getLogger(__name__)

MB = 1024 * 1024
RAPL_ROOT = Path("/sys/class/powercap")
# Package domains only: ``intel-rapl:0`` is a socket; ``intel-rapl:0:0`` (core, uncore, dram) is
# already included in its package, so summing both would double count.
_RAPL_PACKAGE = re.compile(r"^intel-rapl:\d+$")

CSV_COLUMNS = ("t_s", "rss_mb", "cpu_percent", "gpu_power_w", "gpu_memory_used_mb", "gpu_utilization_percent")


# ---------------------------------------------------------------------------------------------
# Pure helpers (unit-tested without hardware)
# ---------------------------------------------------------------------------------------------


def integrate_energy_j(times_s: Sequence[float], watts: Sequence[float | None]) -> float | None:
    """Trapezoid integral of sampled power over time, in joules.

    Used when the GPU has no hardware energy counter. Samples whose power is ``None`` (a failed
    read) are dropped rather than treated as zero, which would under-count. Fewer than two valid
    samples give ``None``: one point bounds no interval, so there is nothing honest to report.
    """
    if len(times_s) != len(watts):
        raise ValueError(f"times_s and watts differ in length ({len(times_s)} != {len(watts)})")
    pts = [(t, w) for t, w in zip(times_s, watts, strict=True) if w is not None]
    if len(pts) < 2:
        return None
    return float(sum((t1 - t0) * (w0 + w1) / 2.0 for (t0, w0), (t1, w1) in zip(pts, pts[1:], strict=False)))


def counter_delta(start: int, end: int, max_range: int) -> int:
    """Increase of a wrapping energy counter (RAPL ``energy_uj``) between two reads.

    The counter restarts from zero after ``max_energy_range_uj``; if ``end < start`` it wrapped
    (once; the monitor reads it every sample so that several wraps cannot hide between reads).
    """
    if end >= start:
        return end - start
    return (max_range - start) + end


def nvml_index(cuda_index: int, visible_devices: str | None) -> int:
    """Map a torch CUDA ordinal to the NVML device index.

    torch numbers only the devices in ``CUDA_VISIBLE_DEVICES``; NVML numbers all of them. With
    ``CUDA_VISIBLE_DEVICES=2,3``, ``cuda:0`` is NVML device 2. UUID or MIG forms are not mapped
    (the ordinal is returned unchanged), which is also the right answer when the variable is unset.
    """
    if not visible_devices:
        return cuda_index
    parts = [p.strip() for p in visible_devices.split(",") if p.strip()]
    if not parts or not all(p.isdigit() for p in parts) or cuda_index >= len(parts):
        return cuda_index
    return int(parts[cuda_index])


def rapl_package_paths(root: Path = RAPL_ROOT) -> list[Path]:
    """Package-level RAPL domains under ``root`` (sub-domains excluded, see ``_RAPL_PACKAGE``)."""
    try:
        return sorted(p for p in root.iterdir() if _RAPL_PACKAGE.match(p.name))
    except OSError:
        return []


def read_rapl_uj(root: Path = RAPL_ROOT) -> dict[str, tuple[int, int]] | None:
    """``{domain: (energy_uj, max_energy_range_uj)}`` for every package, or ``None``.

    ``None`` when there is no package domain or any of them is unreadable: a partial sum over
    some sockets would be a wrong number presented as a measurement.
    """
    paths = rapl_package_paths(root)
    if not paths:
        return None
    out: dict[str, tuple[int, int]] = {}
    try:
        for p in paths:
            energy = int((p / "energy_uj").read_text().strip())
            max_range = int((p / "max_energy_range_uj").read_text().strip())
            out[p.name] = (energy, max_range)
    except (OSError, ValueError):
        return None
    return out


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(sum(vals) / len(vals)) if vals else None


def _max(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(max(vals)) if vals else None


def _load_pynvml() -> ModuleType | None:
    """Import pynvml lazily so that a machine without the NVIDIA library still imports this module."""
    try:
        import pynvml
    except ImportError:
        return None
    return pynvml


# ---------------------------------------------------------------------------------------------
# Monitor
# ---------------------------------------------------------------------------------------------


class ResourceMonitor:
    """Context manager sampling process and GPU resources in a background thread.

    ``with ResourceMonitor() as mon: train()`` then ``mon.summary()`` and ``mon.write_csv(path)``.
    One sample is taken on entry and one on exit, so even a run shorter than ``interval_s`` has
    two. ``set_phase(label)`` tags following samples (e.g. "train", "eval") in ``samples``.

    GPU energy comes from NVML's cumulative counter when the GPU has one (Volta and later), else
    from integrating sampled power. Without a GPU, CPU package energy comes from RAPL when it is
    readable; otherwise it is ``None``. NVML memory and power are device-wide (they include any
    other process on the same GPU); the torch peak-memory figures are this process only.
    """

    def __init__(self, interval_s: float = 0.5, *, rapl_root: Path | str = RAPL_ROOT) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self.interval_s = float(interval_s)
        self.rapl_root = Path(rapl_root)
        self.samples: list[dict[str, Any]] = []
        self.phase: str | None = None

        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = False
        self._finished = False
        self._sampler_errors = 0

        self._proc = psutil.Process()
        self._children: dict[int, psutil.Process] = {}
        self._t0 = 0.0
        self._wall_time_s = 0.0

        self._cuda = False
        self._cuda_index: int | None = None
        self._device = "cpu"
        self._nvml: ModuleType | None = None
        self._nvml_handle: Any = None
        self._nvml_energy_start_mj: int | None = None
        self._nvml_energy_end_mj: int | None = None
        self._gpu_peak_alloc_mb: float | None = None
        self._gpu_peak_reserved_mb: float | None = None

        self._rapl_last: dict[str, tuple[int, int]] | None = None
        self._rapl_total_uj: int | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def __enter__(self) -> ResourceMonitor:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Never swallow the exception of the monitored block: returning None propagates it.
        self.stop()

    def start(self) -> None:
        """Open the counters, take the first sample and start the sampler thread."""
        if self._started:
            raise RuntimeError("ResourceMonitor can be started only once")
        self._started = True
        self._setup_cuda()
        self._setup_nvml()
        self._rapl_last = read_rapl_uj(self.rapl_root)
        self._rapl_total_uj = 0 if self._rapl_last is not None else None
        self._cpu_percent()  # psutil's first call only primes the counter; its 0.0 is discarded
        self._t0 = time.perf_counter()
        self._take_sample(first=True)
        self._thread = threading.Thread(target=self._run, name="ftbench-resource-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop and join the sampler, take the last sample, read end counters, shut NVML down.

        Idempotent, and safe to call from ``__exit__`` while an exception is propagating.
        """
        if not self._started or self._finished:
            return
        self._stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, 10 * self.interval_s))
            if self._thread.is_alive():
                log.warning("resource sampler thread did not stop in time; its samples may be incomplete")
        if self._cuda:
            # Queued kernels belong to this run: wait for them before stopping the clock.
            try:
                torch.cuda.synchronize()
            except Exception as e:  # measurement must not mask the real outcome
                log.warning("torch.cuda.synchronize failed at monitor stop: %s", e)
        self._wall_time_s = time.perf_counter() - self._t0
        self._take_sample(first=False)
        self._read_end_counters()
        self._shutdown_nvml()
        self._finished = True

    def set_phase(self, label: str | None) -> None:
        """Label the samples taken from now on (kept in ``samples``; not a CSV column)."""
        self.phase = label

    # -- setup --------------------------------------------------------------------------------

    def _setup_cuda(self) -> None:
        try:
            if not torch.cuda.is_available():
                return
            self._cuda_index = torch.cuda.current_device()
            self._device = f"cuda:{torch.cuda.get_device_name(self._cuda_index)}"
            torch.cuda.reset_peak_memory_stats(self._cuda_index)
            self._cuda = True
        except Exception as e:
            log.warning("CUDA present but unusable for monitoring: %s", e)
            self._cuda = False

    def _setup_nvml(self) -> None:
        if not self._cuda or self._cuda_index is None:
            return
        nvml = _load_pynvml()
        if nvml is None:
            return
        try:
            nvml.nvmlInit()
        except Exception as e:
            log.warning("NVML unavailable, no GPU power/utilisation/energy: %s", e)
            return
        try:
            idx = nvml_index(self._cuda_index, os.environ.get("CUDA_VISIBLE_DEVICES"))
            self._nvml_handle = nvml.nvmlDeviceGetHandleByIndex(idx)
        except Exception as e:
            log.warning("NVML could not open the device: %s", e)
            _safe_call(nvml.nvmlShutdown)
            return
        self._nvml = nvml
        try:
            self._nvml_energy_start_mj = int(nvml.nvmlDeviceGetTotalEnergyConsumption(self._nvml_handle))
        except Exception:  # NVMLError_NotSupported on pre-Volta, MIG, some vGPU
            self._nvml_energy_start_mj = None

    # -- sampling -----------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop_event.wait(self.interval_s):
            self._take_sample(first=False)

    def _take_sample(self, *, first: bool) -> None:
        try:
            sample: dict[str, Any] = {
                "t_s": time.perf_counter() - self._t0,
                "rss_mb": self._rss_mb(),
                "cpu_percent": None if first else self._cpu_percent(),
                **self._gpu_sample(),
                "phase": self.phase,
            }
            self._update_rapl()
            with self._lock:
                self.samples.append(sample)
        except Exception as e:  # the sampler must never take training down
            self._sampler_errors += 1
            if self._sampler_errors == 1:
                log.warning("resource sampling failed (further failures are counted silently): %s", e)

    def _processes(self) -> list[psutil.Process]:
        """This process and its live descendants (DataLoader workers, tokenizer pools)."""
        procs = [self._proc]
        try:
            kids = self._proc.children(recursive=True)
        except psutil.Error:
            kids = []
        alive = {k.pid for k in kids}
        for pid in list(self._children):
            if pid not in alive:
                del self._children[pid]
        for k in kids:
            # Keep the same Process object so cpu_percent measures since the previous sample.
            procs.append(self._children.setdefault(k.pid, k))
        return procs

    def _rss_mb(self) -> float:
        total = 0
        for p in self._processes():
            try:
                total += p.memory_info().rss
            except psutil.Error:
                continue  # a child exited between listing and reading
        return total / MB

    def _cpu_percent(self) -> float | None:
        """CPU % since the previous call, summed over the process tree (100 = one full core)."""
        total = 0.0
        for p in self._processes():
            try:
                total += p.cpu_percent(None)
            except psutil.Error:
                continue
        return total

    def _gpu_sample(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {
            "gpu_power_w": None,
            "gpu_memory_used_mb": None,
            "gpu_utilization_percent": None,
        }
        nvml, h = self._nvml, self._nvml_handle
        if nvml is None:
            return out
        # Each field on its own: an unsupported query (MIG has no power reading) leaves only it None.
        with contextlib.suppress(Exception):
            out["gpu_power_w"] = nvml.nvmlDeviceGetPowerUsage(h) / 1000.0
        with contextlib.suppress(Exception):
            out["gpu_memory_used_mb"] = nvml.nvmlDeviceGetMemoryInfo(h).used / MB
        with contextlib.suppress(Exception):
            out["gpu_utilization_percent"] = float(nvml.nvmlDeviceGetUtilizationRates(h).gpu)
        return out

    def _update_rapl(self) -> None:
        """Accumulate RAPL energy since the last read; reading every sample survives many wraps."""
        if self._rapl_last is None or self._rapl_total_uj is None:
            return
        now = read_rapl_uj(self.rapl_root)
        if now is None or now.keys() != self._rapl_last.keys():
            return  # transient failure: the next successful read covers the gap (if it wrapped < once)
        for name, (energy, max_range) in now.items():
            self._rapl_total_uj += counter_delta(self._rapl_last[name][0], energy, max_range)
        self._rapl_last = now

    def _read_end_counters(self) -> None:
        if self._cuda:
            try:
                self._gpu_peak_alloc_mb = torch.cuda.max_memory_allocated(self._cuda_index) / MB
                self._gpu_peak_reserved_mb = torch.cuda.max_memory_reserved(self._cuda_index) / MB
            except Exception as e:
                log.warning("could not read torch CUDA peak memory: %s", e)
        if self._nvml is not None and self._nvml_energy_start_mj is not None:
            try:
                self._nvml_energy_end_mj = int(
                    self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._nvml_handle)
                )
            except Exception:
                self._nvml_energy_end_mj = None

    def _shutdown_nvml(self) -> None:
        if self._nvml is not None:
            _safe_call(self._nvml.nvmlShutdown)
            self._nvml = None
            self._nvml_handle = None

    # -- results ------------------------------------------------------------------------------

    def energy_so_far_j(self) -> float | None:
        """Energy used since :meth:`start`, read while the monitor runs (None when not measurable).

        The training loop stores it in each checkpoint so that a resumed run can report the energy of
        every attempt, not only of the last one.
        """
        if self._cuda and self._nvml is not None and self._nvml_energy_start_mj is not None:
            try:
                now = int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._nvml_handle))
                return (now - self._nvml_energy_start_mj) / 1000.0
            except Exception:
                return None
        if self._cuda:
            with self._lock:
                samples = list(self.samples)
            return integrate_energy_j([s["t_s"] for s in samples], [s["gpu_power_w"] for s in samples])
        return self._rapl_total_uj / 1e6 if self._rapl_total_uj is not None else None

    def _energy(self) -> tuple[float | None, str | None]:
        if self._cuda:
            if self._nvml_energy_start_mj is not None and self._nvml_energy_end_mj is not None:
                return (self._nvml_energy_end_mj - self._nvml_energy_start_mj) / 1000.0, "nvml_counter"
            energy = integrate_energy_j(
                [s["t_s"] for s in self.samples], [s["gpu_power_w"] for s in self.samples]
            )
            return (energy, "integrated_power") if energy is not None else (None, None)
        if self._rapl_total_uj is not None:
            return self._rapl_total_uj / 1e6, "rapl"
        return None, None

    def summary(self) -> dict[str, Any]:
        """Aggregate figures for the whole monitored block (call after it has exited)."""
        if not self._finished:
            raise RuntimeError("summary() is available after the monitor has stopped (leave the with block)")
        with self._lock:
            samples = list(self.samples)
        energy_j, energy_source = self._energy()
        return {
            "wall_time_s": self._wall_time_s,
            "device": self._device,
            "peak_rss_mb": _max([s["rss_mb"] for s in samples]),
            "mean_cpu_percent": _mean([s["cpu_percent"] for s in samples]),
            "gpu_peak_memory_allocated_mb": self._gpu_peak_alloc_mb,
            "gpu_peak_memory_reserved_mb": self._gpu_peak_reserved_mb,
            "gpu_peak_memory_used_mb": _max([s["gpu_memory_used_mb"] for s in samples]),
            "gpu_power_mean_w": _mean([s["gpu_power_w"] for s in samples]),
            "gpu_power_peak_w": _max([s["gpu_power_w"] for s in samples]),
            "gpu_utilization_mean_percent": _mean([s["gpu_utilization_percent"] for s in samples]),
            "energy_j": energy_j,
            "energy_wh": energy_j / 3600.0 if energy_j is not None else None,
            "energy_source": energy_source,
            "n_samples": len(samples),
            "sample_interval_s": self.interval_s,
        }

    def write_csv(self, path: str | Path) -> None:
        """Write the time series atomically (``io.write_text``: temp file, then rename)."""
        with self._lock:
            samples = list(self.samples)
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(CSV_COLUMNS)
        for s in samples:
            w.writerow(["" if s.get(c) is None else s[c] for c in CSV_COLUMNS])
        write_text(path, buf.getvalue())


def _safe_call(fn: Any) -> None:
    try:
        fn()
    except Exception as e:
        log.debug("ignored error in %s: %s", getattr(fn, "__name__", fn), e)


# ---------------------------------------------------------------------------------------------
# Throughput helpers
# ---------------------------------------------------------------------------------------------


def measure_peak_flops(
    device: str = "cpu", dtype: torch.dtype = torch.float32, n: int = 1024, repeats: int = 5,
    min_seconds: float = 1.0,
) -> float:
    """Achieved matmul FLOP/s on ``device`` in ``dtype`` (2·n³ per n×n matmul, best of ``repeats``).

    This is a *measured* peak, used as the MFU denominator when params.yaml gives no datasheet
    figure; it is honest about the machine at hand but below the vendor number (small ``n``
    under-fills a large GPU; use n≥4096 there). On CUDA each timed repeat queues several matmuls
    between synchronisations so that launch latency does not dominate, and float32 runs with the
    current TF32 setting — the same one training uses.
    """
    if n <= 0 or repeats <= 0:
        raise ValueError(f"n and repeats must be positive, got n={n}, repeats={repeats}")
    dev = torch.device(device)
    is_cuda = dev.type == "cuda"
    inner = 10 if is_cuda else 1

    def sync() -> None:
        if is_cuda:
            torch.cuda.synchronize(dev)

    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=dev, dtype=dtype)
    b = torch.randn(n, n, generator=gen).to(device=dev, dtype=dtype)
    with torch.no_grad():
        # Warm up for a fixed time, not a fixed count: thread pools, clocks and the allocator
        # settle over ~0.5 s on a CPU, and a cold probe under-reads the peak by up to 2x.
        deadline = time.perf_counter() + min_seconds / 2
        while time.perf_counter() < deadline:
            torch.matmul(a, b)
        sync()
        best, timed, t_end = math.inf, 0, time.perf_counter() + min_seconds
        while timed < repeats or time.perf_counter() < t_end:
            sync()
            t0 = time.perf_counter()
            for _ in range(inner):
                torch.matmul(a, b)
            sync()
            best = min(best, time.perf_counter() - t0)
            timed += 1
    best = max(best, 1e-9)
    return 2.0 * n**3 * inner / best


@dataclass(frozen=True)
class PeakFlops:
    """The MFU denominator and where it came from: ``params`` (``monitor.peak_flops``),
    ``measured_matmul_probe`` (probed now, then cached) or ``cached_probe`` (an earlier probe on
    this machine, device, thread count and dtype)."""

    flops: float
    source: str
    key: str | None


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def peak_flops_key(device: str, dtype: torch.dtype) -> str:
    """What a measured peak depends on: the accelerator, the CPU, torch's thread count and the dtype
    (and TF32 for float32 on CUDA). Two runs with the same key share one probe result."""
    parts = [f"cpu={_cpu_model()}", f"threads={torch.get_num_threads()}", f"dtype={str(dtype).removeprefix('torch.')}"]
    if torch.device(device).type == "cuda":
        parts.insert(0, f"cuda={torch.cuda.get_device_name(torch.device(device))}")
        if dtype == torch.float32:
            parts.append(f"tf32={torch.backends.cuda.matmul.allow_tf32}")
    else:
        parts.insert(0, f"device={torch.device(device).type}")
    return "|".join(parts)


def peak_flops(device: str, dtype: torch.dtype, configured: float | None = None) -> PeakFlops:
    """The peak FLOP/s every MFU of this machine is divided by.

    ``monitor.peak_flops`` wins when set. Otherwise the matmul probe runs once per
    :func:`peak_flops_key` and its result is kept in ``<ftbench cache>/peak_flops.json``, so every
    method, seed and stage divides by the same figure (each stage probing its own peak gave methods
    different denominators). A lock file keeps two stages started together from probing at once
    (each would slow the other's probe down). Delete the file to measure again.
    """
    if configured is not None:
        return PeakFlops(float(configured), "params", None)
    key = peak_flops_key(device, dtype)
    path = cache_dir() / "peak_flops.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        table = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        if key in table:
            return PeakFlops(float(table[key]["flops"]), "cached_probe", key)
        # n=4096 fills a large GPU (a 1024 matmul under-reads its peak); on a CPU 1024 already saturates
        n = 4096 if torch.device(device).type == "cuda" else 1024
        flops = measure_peak_flops(device, dtype=dtype, n=n)
        table[key] = {"flops": flops, "n": n, "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        write_json(path, table)
    return PeakFlops(flops, "measured_matmul_probe", key)


def _linear_flops(model: torch.nn.Module) -> tuple[list[tuple[float, bool]], list[tuple[float, bool]]]:
    """Per-token matmul FLOPs of each linear layer, split into (body, output head), each as
    ``(flops, is_the_head)`` in module order.

    Forward: 2 FLOPs per weight of every linear layer (sizes from in/out features, so 4-bit packed
    weights count in full). Backward: input gradients flow from the top down to the first linear layer
    that trains (2 per weight of it and all above), and weight gradients exist only for trainable
    weights (2 per weight). Attention-score FLOPs (quadratic in length) are left out: small for the
    short QA prompts here.
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    trains = [m.weight.requires_grad for m in linears]
    first = trains.index(True) if True in trains else len(linears)
    flops = [(2.0 * m.in_features * m.out_features * (1 + (i >= first) + t), m is head)
             for i, (m, t) in enumerate(zip(linears, trains, strict=True))]
    return [f for f in flops if not f[1]], [f for f in flops if f[1]]


def training_flops(model: torch.nn.Module, tokens: int, head_tokens: int) -> float:
    """Matmul FLOPs of a training run that ran ``tokens`` tokens through the body of the model and the
    output head on ``head_tokens`` positions only (the labelled ones: see ``training.answer_loss``).

    Counts only the work the method really does (:func:`_linear_flops`): full fine-tuning gives the
    familiar 6·N per token; LoRA on every block ≈ 4·N; top-layer tuning ≈ 2·N plus the top block.
    """
    body, head = _linear_flops(model)
    return tokens * sum(f for f, _ in body) + head_tokens * sum(f for f, _ in head)


def training_flops_per_token(model: torch.nn.Module) -> float:
    """Matmul FLOPs per token of one training step with the output head at every position (what a
    plain ``model(**batch).loss`` costs); see :func:`training_flops` for the rules."""
    return training_flops(model, 1, 1)


def model_flops_utilization(flops_per_token: float, tokens: int, seconds: float, peak_flops: float) -> float:
    """Fraction of ``peak_flops`` used: ``flops_per_token`` × tokens / (seconds × peak), as nanoGPT's
    ``estimate_mfu`` but with the per-token cost of :func:`training_flops_per_token` (or 2·N for
    inference) instead of a blanket 6·N, which overstates partial fine-tuning (MFU above 1)."""
    if seconds <= 0 or peak_flops <= 0:
        raise ValueError(f"seconds and peak_flops must be positive, got {seconds}, {peak_flops}")
    return flops_per_token * tokens / (seconds * peak_flops)


def environment() -> dict[str, Any]:
    """Library versions and the CPU kernel path, so that a difference between two runs of the same
    commit can be traced to a different machine or package (QLoRA's CPU kernels differ by both)."""
    import platform
    from importlib import metadata

    def version(package: str) -> str | None:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return None

    avx512bf16 = None  # unknown: bitsandbytes absent or not loaded by this run (false without its native library)
    if "bitsandbytes" in sys.modules:  # loaded by the run (QLoRA; peft loads it for every adapter method):
        # whether this CPU has the bf16 kernel's instructions, as bitsandbytes sees it (ftbench keeps that kernel
        # off: registry.one_cpu_kernel_path). Importing it only to ask would cost a stage that never uses it ~1.3 s.
        try:
            from bitsandbytes.nn.modules import has_avx512bf16

            avx512bf16 = bool(has_avx512bf16())
        except Exception:
            pass
    return {
        "python": platform.python_version(),
        **{name: version(name) for name in ("torch", "transformers", "peft", "bitsandbytes")},
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_avx512bf16": avx512bf16,
        "torch_threads": torch.get_num_threads(),
    }


def latency_stats(per_example_seconds: Sequence[float]) -> dict[str, float | None]:
    """Mean, median and 95th-percentile latency (numpy linear percentiles); ``None`` when empty."""
    if len(per_example_seconds) == 0:
        return {"latency_mean_s": None, "latency_p50_s": None, "latency_p95_s": None}
    arr = np.asarray(per_example_seconds, dtype=float)
    return {
        "latency_mean_s": float(arr.mean()),
        "latency_p50_s": float(np.percentile(arr, 50)),
        "latency_p95_s": float(np.percentile(arr, 95)),
    }
