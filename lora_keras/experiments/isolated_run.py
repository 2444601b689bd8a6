"""Runs one training configuration in a fresh Python process and reads back its result.

A fresh process per run is what makes the comparison honest: peak memory
(process RSS on a CPU, the allocator's peak on a GPU) and compiled graphs start
from nothing, and a run that crashes or runs out of memory takes only itself
down. The child's output is relayed line by line (progress bars included), so a
terminal or a notebook shows it live, and is kept in a log beside the results.
"""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

from lora_keras.experiments.job_file import job_json
from lora_keras.io_utils import atomic_write_json

# How long to wait for the last output of a child once it has ended.
_RELAY_GRACE_S = 10
_OOM_MARKERS = ("ResourceExhaustedError", "out of memory", "OutOfMemoryError", "OOM when")


# Colour and cursor codes, and TensorFlow's C++ log lines ("I0000 00:00:17... port.cc:153] ...").
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_TF_LOG_LINE = re.compile(
    r"^([IWEF]\d{4} [\d:.]+\s+\d+ \S+:\d+\]|WARNING: All log messages before absl)"
)


def _classify_failure(returncode, log_tail):
    """ "oom" only for a known out-of-memory message; "killed" for a signal; else "failed"."""
    if any(marker in log_tail for marker in _OOM_MARKERS):
        return "oom"
    if returncode < 0:
        # A signal is not evidence of memory: the OOM killer, `kill -9` and a cluster's
        # scheduler all send SIGKILL. The error says which signal.
        return "killed"
    return "failed"


def _clean_lines(log_tail):
    """The log's lines as a reader saw them: no colour codes, progress redraws or TF log lines."""
    lines = []
    for line in _ANSI.sub("", log_tail).replace("\x08", "").splitlines():
        line = line.rsplit("\r", 1)[-1].rstrip()  # a progress bar redraws after each \r
        if line.strip() and not _TF_LOG_LINE.match(line):
            lines.append(line)
    return lines


def error_text(returncode, log_tail):
    """The Python exception that ended the child, or what ended it if none was raised."""
    if returncode < 0:
        name = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else ""
        return f"killed by signal {-returncode} ({name}); no Python error was raised"
    lines = _clean_lines(log_tail)
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent")]
    if starts:
        # After the traceback's indented frames comes the exception, possibly over lines.
        after = lines[starts[-1] + 1 :]
        first = next((i for i, line in enumerate(after) if not line[:1].isspace()), None)
        if first is not None:
            return " ".join(line.strip() for line in after[first:])
    return f"exit code {returncode}: " + " | ".join(lines[-3:])


def _kill(process):
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _relay(stream, log_file, echo):
    """Copies the child's output to the log and, through `echo` (if any), to the screen."""
    logging = True
    for chunk in iter(lambda: stream.read1(4096), b""):
        if logging:
            try:
                log_file.write(chunk)
                log_file.flush()
            except OSError:
                # A full disk: the log stops there, but the child's output is still read, or
                # the child would wait forever on a full pipe.
                logging = False
        if echo:
            _show(echo(chunk))
    if echo and hasattr(echo, "flush"):
        _show(echo.flush())


def _show(data):
    sys.stdout.write(data.decode("utf-8", errors="replace"))
    sys.stdout.flush()


def run_isolated(spec, run, run_folder, echo=True, timeout_s=None):
    """Trains `run` of `spec` in a child process; returns its run record, failed or not.

    Args:
        spec, run: the `RunSpec` and its `PlannedRun`, written for the child as `job_json`.
        run_folder: where `<name>.spec.json`, `<name>.json` and `<name>.log` go.
        echo: relay the child's output to this process's stdout: `True` all of it, `False`
            none, or a callable that takes each chunk and returns what to show of it.
        timeout_s: kill the child after this many seconds (status "timeout").

    Returns:
        The child's run record, or `{"mode", "status", "error", ...}` if it
        failed, ran out of memory or timed out.
    """
    os.makedirs(run_folder, exist_ok=True)
    name = run.name
    spec_path = os.path.join(run_folder, f"{name}.spec.json")
    result_path = os.path.join(run_folder, f"{name}.json")
    log_path = os.path.join(run_folder, f"{name}.log")
    atomic_write_json(spec_path, job_json(spec, run))
    command = [sys.executable, "-m", "lora_keras.experiments.run_child", spec_path, result_path]
    env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")
    # The child measures under the spec's backend, whatever this process runs.
    env["KERAS_BACKEND"] = spec.backend
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
        except BaseException:
            # Ctrl-C, SIGTERM or SIGHUP in this process: the child's group goes with it.
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
        error = error_text(process.returncode, tail)
    return {
        **run.to_json(),
        "status": status,
        "error": error,
        "log": os.path.basename(log_path),
        "wall_time_s": wall_time,
    }
