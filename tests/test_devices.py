"""run.device: auto on a (fake) multi-GPU node: one GPU per ftbench process, most free memory first.

NVML is replaced by a small module named ``pynvml`` on the import path (so the code under test imports it
exactly as it imports the real one) that reads its GPUs from ``FAKE_NVML_GPUS``; torch is told it sees
``device_count`` GPUs. Other holders are real: separate processes, or another open file description on
the same lock file (``flock`` locks belong to the open file description, not to the process)."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO

from ftbench import devices
from ftbench.io import ConfigError
from ftbench.registry import pick_device

GIB = 2**30

FAKE_NVML = '''
import json, os


def _gpus():
    return json.loads(os.environ["FAKE_NVML_GPUS"])


def nvmlInit():
    pass


def nvmlShutdown():
    pass


def nvmlDeviceGetHandleByIndex(index):
    if index >= len(_gpus()):
        raise RuntimeError("NVML: Invalid Argument")
    return index


def nvmlDeviceGetUUID(handle):
    return _gpus()[handle]["uuid"].encode()  # older pynvml returns bytes


class _Memory:
    def __init__(self, free):
        self.total, self.free, self.used = 80 * 2**30, free, 80 * 2**30 - free


def nvmlDeviceGetMemoryInfo(handle):
    return _Memory(_gpus()[handle]["free"])
'''

# A stage stand-in: pick a device, print it, keep it until stdin closes (or the process is killed).
HOLDER = '''
import sys
import torch

torch.cuda.is_available = lambda: True
torch.cuda.device_count = lambda: int(sys.argv[1])
torch.cuda.set_device = lambda device: None
from ftbench.registry import pick_device

print(pick_device("auto"), flush=True)
sys.stdin.read()
'''


@pytest.fixture
def node(tmp_path, monkeypatch):
    """Factory: ``node(free_gib, visible=None)`` fakes a node whose NVML GPU i has ``free_gib[i]`` GiB free.

    Returns the environment a holder subprocess needs. The lock directory is private to the test."""
    fake = tmp_path / "fake_nvml"
    fake.mkdir()
    (fake / "pynvml.py").write_text(FAKE_NVML)
    monkeypatch.syspath_prepend(str(fake))
    monkeypatch.delitem(sys.modules, "pynvml", raising=False)
    monkeypatch.setenv("FTBENCH_CACHE", str(tmp_path / "cache"))
    for var in ("CUDA_VISIBLE_DEVICES", "WORLD_SIZE", "LOCAL_RANK", "FTBENCH_LOCK_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(devices, "_lease", None)
    current: list[str] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: current.append(device))

    def configure(free_gib: list[float], visible: str | None = None) -> dict[str, str]:
        gpus = [{"uuid": f"GPU-fake-{i}", "free": int(f * GIB)} for i, f in enumerate(free_gib)]
        monkeypatch.setenv("FAKE_NVML_GPUS", json.dumps(gpus))
        if visible is not None:
            monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
        count = len(visible.split(",")) if visible is not None else len(free_gib)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        return {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake), str(REPO / "src")]),
                "FAKE_GPU_COUNT": str(count)}

    configure.current = current
    yield configure
    if devices._lease is not None:
        devices._lease[1].close()


def _lock_path(tmp_path: Path, uuid: str) -> Path:
    return tmp_path / "cache" / "gpu-locks" / f"{uuid}.lock"


def _hold(path: Path):
    """Another holder of ``path``'s lock: a separate open file description in this process."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a+")  # noqa: SIM115 - the lock must outlive this function
    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fh


def _start_holder(env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, env["FAKE_GPU_COUNT"]], env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = proc.stdout.readline().strip()
    if not line:
        proc.kill()
        raise AssertionError(f"holder printed no device: {proc.stderr.read()[-3000:]}")
    return proc, line


def test_no_cuda_gives_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto") == "cpu"


def test_one_gpu_is_cuda_0_without_a_lock(node, tmp_path):
    node([10])
    assert pick_device("auto") == "cuda:0"
    assert not (tmp_path / "cache" / "gpu-locks").exists()


def test_picks_the_gpu_with_most_free_memory_and_makes_it_current(node, tmp_path):
    node([10, 30, 70, 50])
    assert pick_device("auto") == "cuda:2"
    assert node.current == ["cuda:2"]  # the monitor and peak-memory figures read the current device
    assert _lock_path(tmp_path, "GPU-fake-2").read_text().strip() == str(os.getpid())
    assert pick_device("auto") == "cuda:2"  # one GPU per process: a second stage call keeps it


def test_lock_dir_can_be_shared_between_users(node, tmp_path, monkeypatch):
    node([10, 30])
    monkeypatch.setenv("FTBENCH_LOCK_DIR", str(tmp_path / "shared-locks"))
    other = _hold(tmp_path / "shared-locks" / "GPU-fake-1.lock")
    try:
        assert pick_device("auto") == "cuda:0"
    finally:
        other.close()


def test_a_gpu_another_holder_locks_is_skipped(node, tmp_path):
    node([10, 30, 70, 50])
    other = _hold(_lock_path(tmp_path, "GPU-fake-2"))
    try:
        assert pick_device("auto") == "cuda:3"
    finally:
        other.close()


def test_parallel_processes_get_different_gpus_and_a_dead_holders_gpu_is_free_again(node):
    env = node([10, 30, 70, 50])
    first, device_first = _start_holder(env)
    second, device_second = _start_holder(env)
    try:
        assert (device_first, device_second) == ("cuda:2", "cuda:3")
        first.kill()  # SIGKILL: no cleanup code runs; the kernel drops the lock
        first.wait()
        third, device_third = _start_holder(env)
        third.kill()
        third.wait()
        assert device_third == "cuda:2"
    finally:
        for proc in (first, second):
            proc.kill()
            proc.wait()
            proc.stdout.close()
            proc.stderr.close()
            proc.stdin.close()


def test_cuda_visible_devices_maps_to_nvml_indices(node, tmp_path):
    """With CUDA_VISIBLE_DEVICES=1,3 torch sees two GPUs; NVML GPU 0 (most free) is not among them."""
    node([70, 10, 5, 30], visible="1,3")
    assert pick_device("auto") == "cuda:1"  # torch's second GPU is NVML GPU 3
    assert _lock_path(tmp_path, "GPU-fake-3").exists()


def test_launcher_rank_wins_and_takes_no_lock(node, tmp_path, monkeypatch):
    node([10, 30, 70, 50])
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert pick_device("auto") == "cuda:1"
    assert not (tmp_path / "cache" / "gpu-locks").exists()
    monkeypatch.setenv("LOCAL_RANK", "5")
    with pytest.raises(ConfigError, match="LOCAL_RANK=5 but only 4"):
        pick_device("auto")


def test_waits_while_every_gpu_is_held_then_takes_the_released_one(node, tmp_path, monkeypatch, caplog):
    node([10, 30])
    held = {uuid: _hold(_lock_path(tmp_path, uuid)) for uuid in ("GPU-fake-0", "GPU-fake-1")}
    for fh in held.values():
        fh.write("4242\n")
        fh.flush()
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:  # the first poll finds both held; then the holder of GPU 0 ends
        sleeps.append(seconds)
        held.pop("GPU-fake-0").close()

    monkeypatch.setattr(devices.time, "sleep", sleep)
    with caplog.at_level(logging.WARNING, logger="ftbench.devices"):
        assert pick_device("auto") == "cuda:0"
    held["GPU-fake-1"].close()
    assert sleeps == [devices.POLL_S]
    assert "all 2 GPUs are held" in caplog.text and "4242" in caplog.text


def test_explicit_device_is_kept(node, tmp_path):
    node([10, 30, 70, 50])
    assert pick_device("cuda:1") == "cuda:1"
    assert not (tmp_path / "cache" / "gpu-locks").exists()
