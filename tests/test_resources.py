"""Tests for ftbench.resources: the monitor on a real CPU run, the pure helpers by hand, and the
GPU code paths with a minimal fake NVML (no GPU needed)."""

from __future__ import annotations

import csv
import math
import os
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ftbench import resources
from ftbench.resources import (
    CSV_COLUMNS,
    ResourceMonitor,
    counter_delta,
    integrate_energy_j,
    latency_stats,
    measure_peak_flops,
    model_flops_utilization,
    nvml_index,
    read_rapl_uj,
    training_flops_per_token,
)

GPU_KEYS = (
    "gpu_peak_memory_allocated_mb",
    "gpu_peak_memory_reserved_mb",
    "gpu_peak_memory_used_mb",
    "gpu_power_mean_w",
    "gpu_power_peak_w",
    "gpu_utilization_mean_percent",
)


def _busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    x = 0
    while time.perf_counter() < end:
        x += 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="asserts the CPU-only result")
def test_monitor_cpu_run(tmp_path: Path) -> None:
    import psutil

    baseline_mb = psutil.Process().memory_info().rss / 2**20
    t0 = time.perf_counter()
    with ResourceMonitor(interval_s=0.1) as mon:
        arr = np.ones(200 * 2**20 // 8)  # ~200 MB, every page touched
        _busy(1.0)
        assert arr.sum() > 0
        del arr
    elapsed = time.perf_counter() - t0
    s = mon.summary()

    assert s["n_samples"] >= 2
    assert s["peak_rss_mb"] >= baseline_mb + 150
    assert 1.0 <= s["wall_time_s"] <= elapsed
    assert s["wall_time_s"] == pytest.approx(elapsed, abs=0.3)
    assert s["mean_cpu_percent"] is not None and s["mean_cpu_percent"] > 0
    assert s["device"] == "cpu"
    assert s["sample_interval_s"] == 0.1
    for k in GPU_KEYS:
        assert s[k] is None, k

    rapl_readable = read_rapl_uj() is not None
    if rapl_readable:
        assert s["energy_source"] == "rapl" and s["energy_j"] >= 0
        assert s["energy_wh"] == pytest.approx(s["energy_j"] / 3600)
    else:
        assert s["energy_j"] is None and s["energy_wh"] is None and s["energy_source"] is None

    out = tmp_path / "sub" / "resources.csv"
    mon.write_csv(out)
    rows = list(csv.reader(out.open()))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) - 1 == s["n_samples"] >= 2
    assert rows[-1][CSV_COLUMNS.index("gpu_power_w")] == ""
    assert [p.name for p in out.parent.iterdir()] == ["resources.csv"]  # no temp file left behind


def test_exception_propagates_and_thread_stops() -> None:
    mon = ResourceMonitor(interval_s=0.05)
    with pytest.raises(ZeroDivisionError), mon:
        time.sleep(0.12)
        _ = 1 / 0
    assert mon._thread is not None and not mon._thread.is_alive()
    assert mon.summary()["n_samples"] >= 2


def test_summary_before_exit_is_an_error() -> None:
    with ResourceMonitor(interval_s=0.05) as mon, pytest.raises(RuntimeError):
        mon.summary()


def test_sampler_errors_do_not_kill_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    mon = ResourceMonitor(interval_s=0.02)

    def boom() -> float:
        raise RuntimeError("sensor gone")

    with mon:
        monkeypatch.setattr(mon, "_rss_mb", boom)
        time.sleep(0.1)
    assert mon._sampler_errors >= 1
    assert mon.summary()["n_samples"] >= 1  # the first sample, taken before the failure


def test_phase_labels_samples() -> None:
    with ResourceMonitor(interval_s=10) as mon:
        mon.set_phase("eval")
    assert [s["phase"] for s in mon.samples] == [None, "eval"]


# -- pure helpers ------------------------------------------------------------------------------


def test_integrate_energy_trapezoid() -> None:
    # 0-1 s: (100+200)/2*1 = 150 J; 1-3 s: (200+100)/2*2 = 300 J  -> 450 J
    assert integrate_energy_j([0.0, 1.0, 3.0], [100.0, 200.0, 100.0]) == pytest.approx(450.0)
    # a failed read is skipped, not counted as 0 W: 0-3 s at 100 W = 300 J
    assert integrate_energy_j([0.0, 1.0, 3.0], [100.0, None, 100.0]) == pytest.approx(300.0)
    assert integrate_energy_j([0.0], [100.0]) is None
    with pytest.raises(ValueError):
        integrate_energy_j([0.0, 1.0], [1.0])


def test_counter_delta_wraps() -> None:
    assert counter_delta(100, 250, 1000) == 150
    assert counter_delta(990, 10, 1000) == 20


def test_nvml_index_mapping() -> None:
    assert nvml_index(0, None) == 0
    assert nvml_index(1, "") == 1
    assert nvml_index(0, "2,3") == 2
    assert nvml_index(1, "2, 3") == 3
    assert nvml_index(0, "GPU-8f2c1a") == 0  # UUIDs are not mapped


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)  # atomic, so the sampler never reads a half-written counter


def test_rapl_packages_and_wrap(tmp_path: Path) -> None:
    for dom, energy in (("intel-rapl:0", 990), ("intel-rapl:1", 500), ("intel-rapl:0:0", 7)):
        d = tmp_path / dom
        d.mkdir()
        _write(d / "energy_uj", f"{energy}\n")
        _write(d / "max_energy_range_uj", "1000\n")
    assert set(read_rapl_uj(tmp_path)) == {"intel-rapl:0", "intel-rapl:1"}  # sub-domain excluded

    with ResourceMonitor(interval_s=0.02, rapl_root=tmp_path) as mon:
        _write(tmp_path / "intel-rapl:0" / "energy_uj", "10\n")  # wrapped: +20 uJ
        _write(tmp_path / "intel-rapl:1" / "energy_uj", "530\n")  # +30 uJ
        _write(tmp_path / "intel-rapl:0:0" / "energy_uj", "999\n")  # ignored
        deadline = time.monotonic() + 5
        while mon.energy_so_far_j() != pytest.approx(50e-6) and time.monotonic() < deadline:
            time.sleep(0.02)  # the sampler reads the counters every interval
        so_far = mon.energy_so_far_j()
    s = mon.summary()
    if torch.cuda.is_available():
        pytest.skip("on a GPU machine the energy figure is the GPU's")
    assert s["energy_source"] == "rapl"
    assert s["energy_j"] == pytest.approx(50e-6) and so_far == pytest.approx(50e-6)


def test_rapl_unreadable_is_none(tmp_path: Path) -> None:
    d = tmp_path / "intel-rapl:0"
    d.mkdir()
    (d / "max_energy_range_uj").write_text("1000\n")  # energy_uj missing, as if root-only
    assert read_rapl_uj(tmp_path) is None
    assert read_rapl_uj(tmp_path / "absent") is None


def test_mfu_arithmetic() -> None:
    # 6e6 FLOP/token * 1e4 tokens = 6e10 FLOP in 2 s on a 1e11 FLOP/s device -> 0.3
    assert model_flops_utilization(6e6, 10_000, 2.0, 1e11) == pytest.approx(0.3)
    with pytest.raises(ValueError):
        model_flops_utilization(1, 1, 0.0, 1e11)


def test_training_flops_per_token_counts_only_the_work_done() -> None:
    # Three linear layers 10->20, 20->20, 20->20 (N = 1000 weights); biases are not counted in FLOPs.
    net = torch.nn.Sequential(*(torch.nn.Linear(10 if i == 0 else 20, 20) for i in range(3)))
    sizes = [200, 400, 400]  # in*out: 10*20, 20*20, 20*20
    assert training_flops_per_token(net) == 6 * sum(sizes)  # full fine-tuning: the familiar 6N
    for p in net.parameters():
        p.requires_grad = False
    net[2].weight.requires_grad = True  # top layer only: forward 2N, backward through the top layer alone
    assert training_flops_per_token(net) == 2 * sum(sizes) + 2 * 400 + 2 * 400
    net[2].weight.requires_grad = False
    assert training_flops_per_token(net) == 2 * sum(sizes)  # nothing trains: forward only


def test_measure_peak_flops_cpu() -> None:
    flops = measure_peak_flops("cpu", n=256, repeats=2, min_seconds=0.05)
    assert math.isfinite(flops) and flops > 0


def test_latency_stats() -> None:
    s = latency_stats([1.0, 2.0, 3.0, 4.0])
    assert s["latency_mean_s"] == pytest.approx(2.5)
    assert s["latency_p50_s"] == pytest.approx(2.5)
    assert s["latency_p95_s"] == pytest.approx(1 + 0.95 * 3)  # linear interpolation: 3.85
    assert latency_stats([]) == {"latency_mean_s": None, "latency_p50_s": None, "latency_p95_s": None}


# -- GPU path with a fake NVML -----------------------------------------------------------------


class FakeNVMLError(Exception):
    pass


class FakeNvml:
    """Just the NVML calls the monitor makes; the device is NVML index 3."""

    NVMLError = FakeNVMLError

    def __init__(self, energy_mj: list[int] | None, power_mw: int = 250_000) -> None:
        self.energy_mj = energy_mj
        self.power_mw = power_mw
        self.opened: list[int] = []
        self.shutdown = False

    def nvmlInit(self) -> None:
        pass

    def nvmlShutdown(self) -> None:
        self.shutdown = True

    def nvmlDeviceGetHandleByIndex(self, i: int) -> str:
        self.opened.append(i)
        return f"h{i}"

    def nvmlDeviceGetPowerUsage(self, h: str) -> int:
        return self.power_mw

    def nvmlDeviceGetMemoryInfo(self, h: str) -> SimpleNamespace:
        return SimpleNamespace(used=3 * 1024 * 2**20, total=80 * 1024 * 2**20)

    def nvmlDeviceGetUtilizationRates(self, h: str) -> SimpleNamespace:
        return SimpleNamespace(gpu=90, memory=40)

    def nvmlDeviceGetTotalEnergyConsumption(self, h: str) -> int:
        if self.energy_mj is None:
            raise FakeNVMLError("Not Supported")
        return self.energy_mj.pop(0)


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=None: "Fake H200")
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda i=None: None)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda i=None: None)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda i=None: 1536 * 2**20)
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda i=None: 2048 * 2**20)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")


def test_gpu_path_energy_counter(monkeypatch: pytest.MonkeyPatch, fake_cuda: None) -> None:
    nvml = FakeNvml(energy_mj=[1_000_000, 1_512_500])  # start, end: 512.5 J
    monkeypatch.setattr(resources, "_load_pynvml", lambda: nvml)
    with ResourceMonitor(interval_s=0.02) as mon:
        time.sleep(0.1)
    s = mon.summary()

    assert nvml.opened == [3]  # cuda:1 with CUDA_VISIBLE_DEVICES=2,3
    assert nvml.shutdown
    assert s["device"] == "cuda:Fake H200"
    assert s["energy_source"] == "nvml_counter"
    assert s["energy_j"] == pytest.approx(512.5)
    assert s["energy_wh"] == pytest.approx(512.5 / 3600)
    assert s["gpu_power_mean_w"] == pytest.approx(250.0)
    assert s["gpu_power_peak_w"] == pytest.approx(250.0)
    assert s["gpu_peak_memory_used_mb"] == pytest.approx(3072.0)
    assert s["gpu_utilization_mean_percent"] == pytest.approx(90.0)
    assert s["gpu_peak_memory_allocated_mb"] == pytest.approx(1536.0)
    assert s["gpu_peak_memory_reserved_mb"] == pytest.approx(2048.0)


def test_gpu_path_integrated_power(monkeypatch: pytest.MonkeyPatch, fake_cuda: None, tmp_path: Path) -> None:
    nvml = FakeNvml(energy_mj=None, power_mw=200_000)  # no counter: integrate 200 W
    monkeypatch.setattr(resources, "_load_pynvml", lambda: nvml)
    with ResourceMonitor(interval_s=0.02) as mon:
        time.sleep(0.1)
    s = mon.summary()

    ts = [x["t_s"] for x in mon.samples]
    assert s["energy_source"] == "integrated_power"
    assert s["energy_j"] == pytest.approx(200.0 * (ts[-1] - ts[0]))
    assert s["energy_j"] == pytest.approx(200.0 * s["wall_time_s"], rel=0.05)

    mon.write_csv(tmp_path / "r.csv")
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert float(rows[0]["gpu_power_w"]) == 200.0 and float(rows[0]["gpu_memory_used_mb"]) == 3072.0


def test_gpu_without_nvml(monkeypatch: pytest.MonkeyPatch, fake_cuda: None) -> None:
    monkeypatch.setattr(resources, "_load_pynvml", lambda: None)
    with ResourceMonitor(interval_s=0.02) as mon:
        pass
    s = mon.summary()
    assert s["device"] == "cuda:Fake H200"
    assert s["gpu_peak_memory_allocated_mb"] == pytest.approx(1536.0)  # torch still knows
    assert s["gpu_power_mean_w"] is None and s["energy_j"] is None and s["energy_source"] is None


def test_environment_asks_bitsandbytes_only_when_the_run_loaded_it():
    """A run that never loads bitsandbytes (baseline, top layer) does not import it to fill one flag (~1.3 s
    per stage): the flag is null there. Once loaded (QLoRA, or via peft), its kernel choice is reported."""
    import subprocess
    import sys

    code = ("import sys; from ftbench.resources import environment; e = environment(); "
            "print(e['cpu_avx512bf16'], 'bitsandbytes' in sys.modules); "
            "import bitsandbytes; print(type(environment()['cpu_avx512bf16']).__name__)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["None", "False", "bool"]
