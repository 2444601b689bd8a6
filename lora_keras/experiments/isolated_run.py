"""Runs one training configuration in a fresh Python process and reads back its result.

A fresh process per run is what makes the comparison honest: peak memory
(process RSS on a CPU, the allocator's peak on a GPU) and compiled graphs start
from nothing, and a run that crashes or runs out of memory takes only itself
down. The child's output is relayed line by line (progress bars included), so a
terminal or a notebook shows it live, and is kept in a log beside the results.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time

from lora_keras.io_utils import atomic_write_json

# How long to wait for the last output of a child once it has ended.
_RELAY_GRACE_S = 10
_OOM_MARKERS = ("ResourceExhaustedError", "out of memory", "OutOfMemoryError", "OOM when")


def _classify_failure(returncode, log_tail):
    if any(marker in log_tail for marker in _OOM_MARKERS):
        return "oom"
    if returncode == -9:
        # SIGKILL with no Python traceback: on Linux almost always the kernel's OOM killer.
        return "oom"
    return "failed"


def _kill(process):
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _relay(stream, log_file, echo):
    """Copies the child's output to the log and, through `echo` (if any), to the screen."""
    for chunk in iter(lambda: stream.read1(4096), b""):
        log_file.write(chunk)
        log_file.flush()
        if echo:
            _show(echo(chunk))
    if echo and hasattr(echo, "flush"):
        _show(echo.flush())


def _show(data):
    sys.stdout.write(data.decode("utf-8", errors="replace"))
    sys.stdout.flush()


def run_isolated(spec, run_folder, echo=True, timeout_s=None):
    """Trains `spec` in a child process; returns its run record, failed or not.

    Args:
        spec: a JSON-serializable dict for `lora_keras.experiments.train_one`.
        run_folder: where `<name>.spec.json`, `<name>.json` and `<name>.log` go.
        echo: relay the child's output to this process's stdout: `True` all of it, `False`
            none, or a callable that takes each chunk and returns what to show of it.
        timeout_s: kill the child after this many seconds (status "timeout").

    Returns:
        The child's run record, or `{"mode", "status", "error", ...}` if it
        failed, ran out of memory or timed out.
    """
    os.makedirs(run_folder, exist_ok=True)
    name = spec["name"]
    spec_path = os.path.join(run_folder, f"{name}.spec.json")
    result_path = os.path.join(run_folder, f"{name}.json")
    log_path = os.path.join(run_folder, f"{name}.log")
    atomic_write_json(spec_path, spec)
    command = [sys.executable, "-m", "lora_keras.experiments.run_child", spec_path, result_path]
    env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")
    # The child measures under the spec's backend, whatever this process runs.
    env["KERAS_BACKEND"] = spec.get("backend", "tensorflow")
    start = time.perf_counter()
    status = None
    with open(log_path, "wb") as log_file:
        # A session of its own, so that a kill reaches any process the child started too
        # (one holding the output pipe would otherwise keep the relay waiting).
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        show = (lambda chunk: chunk) if echo is True else echo
        relay = threading.Thread(target=_relay, args=(process.stdout, log_file, show))
        relay.start()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill(process)
            status = "timeout"
        except KeyboardInterrupt:
            _kill(process)
            raise
        finally:
            relay.join(timeout=_RELAY_GRACE_S)
    # The parent's clock for every run, finished or not: process start and imports included.
    wall_time = time.perf_counter() - start
    if status is None and process.returncode == 0 and os.path.exists(result_path):
        with open(result_path) as file:
            return dict(json.load(file), wall_time_s=wall_time)
    with open(log_path, "rb") as file:
        tail = file.read()[-3000:].decode("utf-8", errors="replace")
    if status == "timeout":
        error = f"killed after {timeout_s} s (timeout)"
    else:
        status = _classify_failure(process.returncode, tail)
        last_lines = [line for line in tail.strip().splitlines() if line.strip()][-5:]
        error = f"exit code {process.returncode}: " + " | ".join(last_lines)
    return {
        "mode": spec["mode"],
        "rank": spec.get("rank"),
        "status": status,
        "error": error,
        "log": os.path.basename(log_path),
        "wall_time_s": wall_time,
    }
