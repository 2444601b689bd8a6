"""Which machine measured: the CPU's model and instruction sets, and half-precision warnings."""

import importlib

import lora_keras as lk
from lora_keras import host as host_module
from lora_keras.experiments.native_precision import half_precision_warnings
from lora_keras.experiments.run_spec import PlannedRun
from lora_keras.levers.options import Options

# The 2-core machine of issue 17, where the precision levers turned around.
EPYC_AVX2 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse sse2 avx avx2 fma bmi2
processor\t: 1
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse sse2 avx avx2 fma bmi2
"""
SAPPHIRE_RAPIDS = "model name\t: Intel Xeon\nflags\t\t: avx2 fma avx512f avx512_bf16 amx_bf16\n"
GRAVITON = "processor\t: 0\nFeatures\t: fp asimd asimdhp sve bf16 i8mm\n"


def host(cpuinfo, tmp_path, monkeypatch):
    path = tmp_path / "cpuinfo"
    path.write_text(cpuinfo)
    monkeypatch.setattr(host_module.platform, "system", lambda: "Linux")
    model, features = host_module._cpu(str(path))
    return {"cpu_model": model, "cpu_features": features, "gpus": []}


def test_the_cpu_model_and_the_instruction_sets_are_read_from_cpuinfo(tmp_path, monkeypatch):
    assert host(EPYC_AVX2, tmp_path, monkeypatch) == {
        "cpu_model": "AMD EPYC 7B13",
        "cpu_features": ["avx2", "fma"],
        "gpus": [],
    }
    assert host(GRAVITON, tmp_path, monkeypatch)["cpu_features"] == [
        "asimd",
        "asimdhp",
        "sve",
        "bf16",
        "i8mm",
    ]
    here = host_module.describe_host()  # this machine, whatever it is
    assert isinstance(here["cpu_model"], str) and isinstance(here["gpus"], list)


def runs(**levers):
    return [PlannedRun("lora", "lora", 4, Options(**levers))]


def test_a_half_precision_lever_without_native_support_is_warned_of(tmp_path, monkeypatch):
    epyc = host(EPYC_AVX2, tmp_path, monkeypatch)
    [warning] = half_precision_warnings(runs(mixed_precision="bfloat16"), epyc)
    assert warning == (
        "warning: --mixed-precision bfloat16 on this CPU (AMD EPYC 7B13), which has no native "
        "bfloat16 arithmetic (no AVX512_BF16 or AMX_BF16): bfloat16 is emulated through "
        "float32: expect it slower, and perhaps larger, than float32 here, not faster; the "
        "report shows its measured effect."
    )
    [warning] = half_precision_warnings(runs(frozen_dtype="float16"), epyc)
    assert warning.startswith("warning: --frozen-dtype float16 on this CPU (AMD EPYC 7B13)")
    assert half_precision_warnings(runs(), epyc) == []
    xeon = host(SAPPHIRE_RAPIDS, tmp_path, monkeypatch)
    assert half_precision_warnings(runs(mixed_precision="bfloat16"), xeon) == []
    unknown = dict(epyc, cpu_features=None)  # not read: nothing is claimed
    assert half_precision_warnings(runs(mixed_precision="bfloat16"), unknown) == []
    t4 = dict(epyc, gpus=["Tesla T4 (compute capability 7.5)"])
    [warning] = half_precision_warnings(runs(mixed_precision="bfloat16"), t4)
    assert "this GPU (Tesla T4, compute capability 7.5), which has no native bfloat16" in warning
    assert half_precision_warnings(runs(mixed_precision="float16"), t4) == []


def test_the_warning_is_printed_before_the_runs_and_kept_in_results(tmp_path, monkeypatch, capsys):
    compare_module = importlib.import_module("lora_keras.experiments.compare")
    epyc = host(EPYC_AVX2, tmp_path, monkeypatch)
    monkeypatch.setattr(compare_module, "describe_host", lambda: epyc)
    monkeypatch.setattr(compare_module, "warm_tokenizer_cache", lambda *a: None)
    seen = {}
    monkeypatch.setattr(
        compare_module, "run_specs", lambda spec, runs, out, **kw: seen.update(kw) or {}
    )
    lk.compare(
        preset="gpt2_tiny",
        weights="random",
        modes=("lora",),
        mixed_precision="bfloat16",
        out=str(tmp_path / "out"),
    )
    [warning] = seen["warnings"]
    assert warning.startswith("warning: --mixed-precision bfloat16 on this CPU (AMD EPYC 7B13)")
    assert warning in capsys.readouterr().out


def test_run_specs_records_the_host_and_the_warnings(tmp_path, monkeypatch):
    runner = importlib.import_module("lora_keras.experiments.runner")
    monkeypatch.setattr(runner, "write_report", lambda out: None, raising=False)
    monkeypatch.setattr("lora_keras.report.write_report", lambda out: None)
    monkeypatch.setattr(
        runner, "run_isolated", lambda spec, run, folder, **kw: {**run.to_json(), "status": "ok"}
    )
    spec = lk.RunSpec(preset="gpt2_tiny", weights="random", modes=("lora",))
    results = runner.run_specs(spec, spec.runs(), str(tmp_path), warnings=["warning: x"])
    assert results["warnings"] == ["warning: x"]
    assert results["environment"]["cpu_model"] == host_module.describe_host()["cpu_model"]
