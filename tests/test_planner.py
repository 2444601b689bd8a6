"""The planner: predictions from a configuration alone, its errors, its command, its calibration.

Fast and Keras-free: no model is built here (`test_planner_counting.py` builds the tiny ones).
"""

import json
import os
import subprocess
import sys

import pytest

from lora_keras.cli import EXIT_BAD_INPUT, main
from lora_keras.models.architectures import GPT2_ARCHITECTURES
from lora_keras.planner.devices import DEVICES, device_memory, parse_memory
from lora_keras.planner.framework import FITTED, FRAMEWORKS, framework_for
from lora_keras.planner.plan import plan
from lora_keras.planner.predict import predict_peak

ROOT = os.path.join(os.path.dirname(__file__), "..")
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import planner_calibration  # noqa: E402

GIB = 2**30


def test_plan_rows_have_the_designs_fields():
    rows = plan("gpt2_base_en", modes=["full", "lora"], batch_size=4, sequence_length=128)
    assert [row["mode"] for row in rows] == ["full", "lora"]
    for row in rows:
        assert {"mode", "predicted_peak_bytes", "components", "fits"} <= set(row)
        assert row["predicted_peak_bytes"] == sum(row["components"].values())
        assert row["fits"] is None  # no device, no memory: nothing to fit
    full, lora = rows
    assert lora["components"]["optimizer_state"] < full["components"]["optimizer_state"] / 100


def test_every_preset_and_mode_is_planned():
    for preset in GPT2_ARCHITECTURES:
        rows = plan(preset, modes=["full", "lora", "keras_lora", "dora", "qlora", "mixlora"])
        assert all(row["predicted_peak_bytes"] > 0 for row in rows)
    sizes = [plan(p, modes=["full"])[0]["predicted_peak_bytes"] for p in GPT2_ARCHITECTURES]
    assert sizes[1:] == sorted(sizes[1:])  # base < medium < large < extra large


def test_a_cpu_prediction_includes_the_runtime_floor_a_gpu_one_does_not():
    cpu = plan("gpt2_base_en", modes=["lora"], device="cpu")[0]["components"]
    gpu = plan("gpt2_base_en", modes=["lora"], device="h200", backend="jax")[0]["components"]
    assert cpu["runtime"] == FITTED[("tensorflow", "cpu")]["runtime"] > 500 * 2**20
    assert gpu["runtime"] == 0


def test_fits_a_device_and_levers_that_would_make_it_fit():
    rows = plan("gpt2_large_en", modes=["full", "lora"], device="t4", backend="torch")
    full, lora = rows
    assert full["fits"] is False and lora["fits"] is True
    assert full["budget_bytes"] == device_memory("t4")["usable_bytes"]
    changes = {lever["change"]: lever for lever in full["levers"]}
    assert "mode qlora" in changes
    assert all(lever["predicted_peak_bytes"] <= full["budget_bytes"] for lever in changes.values())
    assert changes["mode qlora"]["speed_cost"] > 1  # measured: QLoRA dequantizes every step
    assert "levers" not in lora


def test_a_smaller_batch_is_offered_when_it_fits():
    row = plan(
        "gpt2_base_en",
        modes=["lora"],
        batch_size=64,
        sequence_length=1024,
        memory="24GiB",
        backend="jax",
        options={"jit_compile": True},
    )[0]
    assert row["fits"] is False
    batches = [lever for lever in row["levers"] if lever["change"].startswith("batch_size")]
    assert batches and batches[0]["predicted_peak_bytes"] <= 24 * GIB


def test_memory_budget_takes_units():
    assert parse_memory("15GiB") == 15 * GIB
    assert parse_memory("16 GB") == 16 * 10**9
    assert parse_memory("800MiB") == 800 * 2**20
    assert parse_memory("1.5GiB") == int(1.5 * GIB)
    assert parse_memory("1048576") == 2**20
    row = plan("gpt2_base_en", modes=["lora"], memory="1GiB")[0]
    assert row["fits"] is False and row["budget_bytes"] == GIB


@pytest.mark.parametrize("size", ["", "lots", "-3GiB", "0", "15 parsecs", "GiB"])
def test_bad_memory_sizes_are_refused(size):
    with pytest.raises(ValueError, match="Bad memory size .*such as 15GiB"):
        parse_memory(size)


@pytest.mark.parametrize(
    "call, message",
    [
        (dict(device="tpu"), "Unknown device 'tpu'. Known devices: t4, l4"),
        (dict(preset="gpt5"), "Unknown preset 'gpt5'. Known presets: gpt2_tiny"),
        (dict(modes=["lora", "prefix"]), "Unknown mode 'prefix'. Known modes: full"),
        (dict(modes="lora"), "modes must be a non-empty list"),
        (dict(backend="mxnet"), "Unknown backend 'mxnet'"),
        (dict(batch_size=0), "batch_size must be a positive integer"),
        (dict(sequence_length=2048), "longer than gpt2_base_en's position embedding"),
        (dict(device="t4", memory="15GiB"), "not both"),
        (dict(options={"remat": "yes"}), "remat must be True or False"),
        (dict(modes=["full"], options={"frozen_dtype": "bfloat16"}), "cannot be honoured"),
        (dict(options={"mixed_precision": "bfloat16", "frozen_dtype": "bfloat16"}), "Choose"),
    ],
)
def test_bad_requests_are_refused_with_what_to_do(call, message):
    arguments = {"preset": "gpt2_base_en", "modes": ["lora"], **call}
    with pytest.raises(ValueError, match=message):
        plan(**arguments)


def test_every_device_has_its_memory():
    for name in DEVICES:
        spec = device_memory(name)
        assert spec["kind"] == ("cpu" if name == "cpu" else "gpu") and spec["note"]
        if name != "cpu":
            assert 14 * GIB < spec["usable_bytes"] < spec["total_bytes"]


def test_levers_change_the_prediction_as_they_should():
    def peak(**options):
        return predict_peak("gpt2_base_en", "lora", 4, 512, options=options)[0]["total"]

    plain = peak()
    assert peak(remat=True) < plain and peak(chunked_loss=True) < plain
    assert peak(frozen_dtype="bfloat16") < plain
    qlora = predict_peak("gpt2_base_en", "qlora", 4, 512)[0]
    assert qlora["weights"] < predict_peak("gpt2_base_en", "lora", 4, 512)[0]["weights"] / 2
    # Half precision: layer norms still save float32 tensors, so activations do not halve.
    jax = dict(backend="jax", device_kind="gpu", options={"jit_compile": True})
    half = dict(jax, options={"jit_compile": True, "frozen_dtype": "bfloat16"})
    full_acts = predict_peak("gpt2_base_en", "lora", 4, 128, **jax)[0]["activations"]
    half_acts = predict_peak("gpt2_base_en", "lora", 4, 128, **half)[0]["activations"]
    assert full_acts / 2 < half_acts < full_acts
    mix = predict_peak("gpt2_base_en", "mixlora", 4, 128)[0]
    assert mix["mixlora"] > 0  # the experts' GELU inputs and outputs


def test_full_fine_tuning_peaks_in_the_update_where_it_is_not_donated():
    torch_full = predict_peak("gpt2_base_en", "full", 4, 128, backend="torch", device_kind="gpu")
    xla_full = predict_peak(
        "gpt2_base_en",
        "full",
        4,
        128,
        backend="jax",
        device_kind="gpu",
        options={"jit_compile": True},
    )
    assert torch_full[1] == "update" and torch_full[0]["optimizer_update"] > 0
    assert xla_full[1] == "backward" and xla_full[0]["optimizer_update"] == 0


def test_frameworks_say_what_is_fitted():
    for key, framework in FRAMEWORKS.items():
        assert set(framework.fitted) <= {"runtime", "constant", "kept", "update"}
        assert set(FITTED.get(key, {})) <= set(framework.fitted), key
    assert framework_for("jax", "gpu", jit_compile=True).fitted == ()  # all derived
    with pytest.raises(ValueError, match="Unknown device kind 'tpu'"):
        framework_for("jax", "tpu")


def test_every_committed_result_is_predicted_within_the_goal():
    rows = planner_calibration.table_rows(planner_calibration.measured_runs())
    assert len(rows) >= 37
    worst = max(rows, key=lambda row: abs(row["error"]))
    assert abs(worst["error"]) <= 0.10, worst


def test_sweeps_trained_together_are_predicted_out_of_sample_within_the_goal():
    # Measured after the constants were fitted; a together run is planned as one adapter at
    # the largest rank on the batch of every adapter's sequences.
    rows = planner_calibration.table_rows(planner_calibration.measured_runs(check=True))
    together = [row for row in rows if row["folder"].startswith("sweep-together-cpu")]
    assert sum(row["run"] == "lora_together" for row in together) == 2
    worst = max(together, key=lambda row: abs(row["error"]))
    assert abs(worst["error"]) <= 0.10, worst


def test_refitting_gives_the_committed_constants():
    saved = {key: dict(values) for key, values in FITTED.items()}
    try:
        refitted = planner_calibration.fit(planner_calibration.measured_runs())
    finally:
        FITTED.clear()
        FITTED.update(saved)
    for key, values in refitted.items():
        for name, value in values.items():
            assert value == pytest.approx(saved[key][name], rel=1e-3), (key, name)


def test_plan_command_prints_json(capsys):
    code = main(
        [
            "plan",
            "--preset",
            "gpt2_medium_en",
            "--modes",
            "full,lora,qlora",
            "--batch-size",
            "2",
            "--device",
            "t4",
            "--backend",
            "torch",
            "--remat",
            "--json",
        ]
    )
    assert code == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["mode"] for row in rows] == ["full", "lora", "qlora"]
    assert all(isinstance(row["fits"], bool) for row in rows)


def test_plan_command_prints_a_table_and_levers(capsys):
    assert (
        main(
            [
                "plan",
                "--preset",
                "gpt2_large_en",
                "--modes",
                "full,lora",
                "--memory",
                "15GiB",
                "--backend",
                "torch",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "full" in out and "NO" in out and "fits 15.00 GiB with mode qlora" in out


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--device", "tpu"], "Unknown device 'tpu'"),
        (["--memory", "lots"], "Bad memory size 'lots'"),
        (["--preset", "gpt9"], "Unknown preset 'gpt9'"),
        (["--modes", "lora,prefix"], "Unknown mode 'prefix'"),
    ],
)
def test_plan_command_refuses_bad_input(arguments, message, capsys):
    assert main(["plan", *arguments]) == EXIT_BAD_INPUT
    assert message in capsys.readouterr().err


def test_the_planner_answers_without_keras():
    code = (
        "import sys, json; from lora_keras.planner.plan import plan; "
        "plan('gpt2_extra_large_en', modes=['full', 'qlora'], device='a100-40'); "
        "names = ('keras', 'tensorflow', 'jax', 'torch'); "
        "print(json.dumps([m for m in names if m in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT},
    ).stdout
    assert json.loads(out) == []
