import sys
import types

import pytest
import tensorflow as tf

from lora_keras.measure import memory
from lora_keras.measure.memory import memory_probe


def test_cpu_tensorflow_uses_the_process_peak_never_the_allocator_zero():
    probe = memory_probe("tensorflow")
    assert isinstance(probe, memory.ProcessMemoryProbe)
    assert probe.resettable is False
    assert "ru_maxrss" in probe.source and "CPU" in probe.source
    assert probe.peak_bytes() >= probe.current_bytes() > 10 * 1024**2


def test_tensorflow_gpu_resets_and_reads_the_allocator_peak(monkeypatch):
    calls = []
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind: ["fake GPU"])
    monkeypatch.setattr(tf.config.experimental, "reset_memory_stats", calls.append)
    monkeypatch.setattr(
        tf.config.experimental,
        "get_memory_info",
        lambda device: {"peak": 7 * 1024**3, "current": 5 * 1024**3},
    )
    probe = memory_probe("tensorflow")
    probe.reset()
    assert calls == ["GPU:0"]
    assert probe.peak_bytes() == 7 * 1024**3
    assert probe.current_bytes() == 5 * 1024**3
    assert probe.resettable
    assert probe.source.startswith("TensorFlow allocator peak, GPU:0")


class FakeJaxDevice:
    def __init__(self, platform, stats):
        self.platform, self.id, self.stats = platform, 0, stats

    def memory_stats(self):
        return self.stats


def fake_jax(device):
    return types.SimpleNamespace(devices=lambda: [device])


def test_jax_gpu_reads_memory_stats_and_says_it_cannot_reset(monkeypatch):
    device = FakeJaxDevice("gpu", {"peak_bytes_in_use": 300, "bytes_in_use": 200})
    monkeypatch.setitem(sys.modules, "jax", fake_jax(device))
    probe = memory_probe("jax")
    probe.reset()
    assert (probe.peak_bytes(), probe.current_bytes()) == (300, 200)
    assert probe.resettable is False
    assert "peak_bytes_in_use" in probe.source and "no reset" in probe.source
    assert probe.source.endswith("gpu:0")


def test_jax_cpu_falls_back_to_the_process(monkeypatch):
    monkeypatch.setitem(sys.modules, "jax", fake_jax(FakeJaxDevice("cpu", None)))
    assert isinstance(memory_probe("jax"), memory.ProcessMemoryProbe)


def fake_torch(available):
    calls = []
    cuda = types.SimpleNamespace(
        is_available=lambda: available,
        current_device=lambda: 0,
        reset_peak_memory_stats=lambda: calls.append("reset"),
        max_memory_allocated=lambda: 900,
        memory_allocated=lambda: 400,
    )
    return types.SimpleNamespace(cuda=cuda), calls


def test_torch_cuda_resets_and_reads_the_allocator(monkeypatch):
    torch, calls = fake_torch(available=True)
    monkeypatch.setitem(sys.modules, "torch", torch)
    probe = memory_probe("torch")
    probe.reset()
    assert calls == ["reset"]
    assert (probe.peak_bytes(), probe.current_bytes()) == (900, 400)
    assert probe.source == "torch.cuda.max_memory_allocated, cuda:0"


@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_no_accelerator_falls_back_to_the_process(monkeypatch, backend):
    monkeypatch.setitem(sys.modules, "torch", fake_torch(available=False)[0])
    assert isinstance(memory_probe(backend), memory.ProcessMemoryProbe)


def test_macos_reports_ru_maxrss_in_bytes_linux_in_kib(monkeypatch):
    usage = types.SimpleNamespace(ru_maxrss=2048)
    monkeypatch.setattr(memory.resource, "getrusage", lambda who: usage)
    probe = memory.ProcessMemoryProbe()
    monkeypatch.setattr(probe, "current_bytes", lambda: 0)
    monkeypatch.setattr(memory.sys, "platform", "linux")
    assert probe.peak_bytes() == 2048 * 1024
    monkeypatch.setattr(memory.sys, "platform", "darwin")
    assert probe.peak_bytes() == 2048


def test_the_process_peak_is_never_below_the_current_resident_memory(monkeypatch):
    # Linux's ru_maxrss can trail the current resident memory.
    monkeypatch.setattr(
        memory.resource, "getrusage", lambda who: types.SimpleNamespace(ru_maxrss=1)
    )
    probe = memory.ProcessMemoryProbe()
    monkeypatch.setattr(probe, "current_bytes", lambda: 5000)
    assert probe.peak_bytes() == 5000
