"""Every backend: the checks, the child's quiet output, adapters across backends, data parallel,
and one tiny comparison measured under JAX and under torch."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
from conftest import tiny_compare

import lora_keras as lk
from lora_keras import backends, cli, distribution
from lora_keras.experiments import run_child
from lora_keras.experiments.quiet_logs import StartupNoiseFilter
from lora_keras.experiments.run_spec import RunSpec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(script, backend, **env):
    """Runs `script` in a fresh Python under `backend`; returns its stdout."""
    environment = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=ROOT, **env)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        env=environment,
        cwd=os.path.join(ROOT, "tests"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_unknown_and_missing_backends_are_refused(monkeypatch):
    with pytest.raises(ValueError, match="Unknown backend 'mxnet'. Choose one of: tensorflow, jax"):
        backends.check_backend("mxnet")
    monkeypatch.setattr(backends.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match=r"The jax backend is not installed .*pip install jax"):
        backends.check_backend("jax")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(backend="numpy"), "Unknown backend 'numpy'"),
        (
            dict(backend="torch", data_parallel=True),
            r"data_parallel \(--data-parallel\) needs the jax or tensorflow",
        ),
    ],
)
def test_compare_refuses_a_bad_backend_before_any_run(tmp_path, kwargs, message):
    out = tmp_path / "never"
    with pytest.raises(ValueError, match=message):
        lk.compare(preset="gpt2_tiny", weights="random", out=str(out), **kwargs)
    assert not out.exists()


def test_torch_has_no_data_parallel(monkeypatch):
    monkeypatch.setattr(distribution.keras.backend, "backend", lambda: "torch")
    with pytest.raises(ValueError, match="not available on the torch backend.*--backend jax"):
        lk.data_parallel()


NOISE = (
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    b"I0000 00:00:1795877058.905288   12834 port.cc:153] oneDNN custom operations are on.\n"
    b"E0000 00:00:1795876889.279609   10908 cuda_platform.cc:52] failed call to cuInit: INTERNAL\n"
    b"To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow "
    b"with the appropriate compiler flags.\n"
)
KEPT = b"E0000 00:00:1 5 device.cc:1] a real error\nUserWarning: something real\n"


def test_start_up_notices_are_dropped_and_real_messages_kept():
    show = StartupNoiseFilter()
    # A noise line split across chunks is still recognised; a progress bar shows at once.
    shown = show(NOISE[:30]) + show(NOISE[30:] + KEPT) + show(b"\r1/3 [==>")
    assert shown == KEPT + b"\r1/3 [==>"
    assert show(b" done\n") == b" done\n"  # the rest of that line is never taken for noise
    assert show(b"I0000 00:00:1.5 ") == b""  # maybe noise: held back ...
    assert show.flush() == b"I0000 00:00:1.5 "  # ... and shown once the output ends


ADAPTER_SOURCE = """
    import keras, numpy as np, lora_keras as lk
    from conftest import make_tiny_lm, randomize_lora_b, token_batch
    lm = make_tiny_lm()
    # Each backend draws its own random base: the reader takes this one, then the adapter.
    lm.save_weights({path!r} + ".base.weights.h5")
    randomize_lora_b(lk.apply_lora(lm, rank=4))
    lk.save_adapter(lm, {path!r})
    np.save({path!r} + ".npy", keras.ops.convert_to_numpy(lm(token_batch())))
"""
ADAPTER_TARGET = """
    import keras, numpy as np, lora_keras as lk
    from conftest import make_tiny_lm, token_batch
    lm = make_tiny_lm()
    lm.load_weights({path!r} + ".base.weights.h5")
    lk.load_adapter(lm, {path!r})
    out = keras.ops.convert_to_numpy(lm(token_batch()))
    np.testing.assert_allclose(out, np.load({path!r} + ".npy"), rtol=1e-5, atol=1e-5)
    print("loaded under", keras.backend.backend())
"""


@pytest.mark.large
@pytest.mark.parametrize("writer, reader", [("jax", "torch"), ("torch", "tensorflow")])
def test_an_adapter_written_under_one_backend_loads_under_another(tmp_path, writer, reader):
    path = str(tmp_path / "tiny.lora.h5")
    run_python(ADAPTER_SOURCE.format(path=path), writer)
    assert run_python(ADAPTER_TARGET.format(path=path), reader).strip() == f"loaded under {reader}"


DATA_PARALLEL = """
    import contextlib, json, keras, lora_keras as lk
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf
        two = [tf.config.LogicalDeviceConfiguration()] * 2
        tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0], two)
    from conftest import make_tiny_lm, next_token_dataset
    losses = {}
    for devices in (1, 2):
        scope = lk.data_parallel() if devices == 2 else contextlib.nullcontext()
        with scope:
            lm = make_tiny_lm()
            lk.apply_lora(lm, rank=4)
            lm.compile(
                optimizer=keras.optimizers.SGD(0.5),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            )
            x, y = next_token_dataset(batch_size=4)
            history = lm.fit(x, y, batch_size=4, epochs=3, shuffle=False, verbose=0)
        losses[devices] = history.history["loss"]
    print(json.dumps({"devices": len(lk.distribution.data_parallel_devices()), **losses}))
"""


@pytest.mark.large
@pytest.mark.parametrize("backend", ["jax", "tensorflow"])
def test_data_parallel_on_two_devices_matches_one(backend):
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    result = json.loads(run_python(DATA_PARALLEL, backend, **env).strip().splitlines()[-1])
    assert result["devices"] == 2
    assert result["1"] != pytest.approx(result["1"][:1] * 3)  # it trained: the loss moved
    assert result["2"] == pytest.approx(result["1"], rel=1e-5)


def test_a_global_batch_that_does_not_split_evenly_is_refused(monkeypatch):
    monkeypatch.setattr(distribution, "data_parallel_devices", lambda: ["cpu:0", "cpu:1"])
    with pytest.raises(ValueError, match="batch_size=3 cannot be split evenly over 2 devices"):
        run_child._data_parallel_scope(
            RunSpec(preset="gpt2_tiny", data_parallel=True, batch_size=3)
        )


@pytest.mark.large
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_a_tiny_compare_measures_under_the_asked_backend(tmp_path, monkeypatch, backend):
    # JAX's run also goes through --data-parallel, on two virtual CPU devices.
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    results = tiny_compare(
        tmp_path, monkeypatch, verbose=0, backend=backend, data_parallel=backend == "jax"
    )
    (run,) = results["runs"]
    assert run["data_parallel_devices"] == (2 if backend == "jax" else 1)
    assert run["status"] == "ok", run.get("error")
    assert results["environment"]["backend"] == results["config"]["backend"] == backend
    # The count TensorFlow gives for gpt2_tiny: 4 blocks x 2 targets x (128*2 + 2*128).
    assert run["trainable_params"] == 4 * 2 * (128 * 2 + 2 * 128)
    # A CPU has no allocator statistics: the process's peak, never a 0 from an empty probe.
    assert "process peak resident memory" in run["memory_source"]
    assert run["peak_memory_bytes"] >= run["runtime_memory_bytes"] > 100 * 1024**2
    report = (tmp_path / "report" / "report.md").read_text()
    assert f"| backend | {backend} |" in report


def test_the_gpu_check_fails_clearly_without_a_gpu_or_a_folder(tmp_path):
    script = os.path.join(ROOT, "benchmarks", "gpu_check.sh")
    env = dict(os.environ, PYTHON=sys.executable)
    result = subprocess.run(["bash", script], capture_output=True, text=True, env=env)
    assert result.returncode == 2
    assert result.stderr.startswith("usage: bash ") and "[--cpu] OUT" in result.stderr
    out = tmp_path / "out"
    result = subprocess.run(["bash", script, str(out)], capture_output=True, text=True, env=env)
    assert result.returncode == 2
    # Its output goes to the terminal and to gpu_check.log in the folder.
    log = (out / "gpu_check.log").read_text()
    assert "JAX sees no GPU" in log and "run with --cpu" in log
    assert sorted(path.name for path in out.iterdir()) == ["gpu_check.log"]  # no stage ran


@pytest.mark.parametrize("command", ["compare", "sweep"])
def test_the_command_line_passes_backend_data_parallel_and_verbose(command):
    args = cli.build_parser().parse_args([command, "--backend", "jax", "--data-parallel"])
    expected = {"backend": "jax", "data_parallel": True, "verbose": 1}
    assert cli._run_arguments(args).items() >= expected.items()
    quiet = cli.build_parser().parse_args([command, "--verbose"])
    assert cli._run_arguments(quiet)["verbose"] == 2 and quiet.backend == "tensorflow"
