"""The one runner of `compare`, `sweep` and the benchmarks: each planned run in its own process.

results.json is saved before and after every run, so a comparison that dies says which runs it
lacks, and report.md is drawn from it once the runs end (or are interrupted).
"""

import contextlib
import datetime
import errno
import os
import time

from lora_keras.experiments.isolated_run import run_isolated
from lora_keras.experiments.signals import Interrupted, stop_on_signals
from lora_keras.host import describe_host
from lora_keras.io_utils import atomic_write_bytes, atomic_write_json


def say(message):
    print(message, flush=True)


def placeholder(run, status):
    """The results.json entry of a run that has no record (yet): who it is, and its status."""
    return {
        "name": run.name,
        "mode": run.mode,
        "rank": run.rank,
        "options": run.options.to_json(),  # labels the runs of an options sweep apart
        "status": status,
        **({"adapters": [{"rank": rank} for rank in run.together]} if run.together else {}),
    }


def run_specs(spec, runs, out, echo=True, warnings=()):
    """Runs each of `runs` (`PlannedRun`s of `spec`) in its own process, into `out`.

    A run that fails is recorded with its status and error and the others go on. Every
    planned run is listed from the start ("not started", then "running"), so a comparison
    that dies says which runs it lacks; Ctrl-C, SIGTERM and SIGHUP stop the running child,
    mark it "interrupted", write the report of what finished and raise `Interrupted`. A run
    whose record cannot be saved (a full disk) is marked failed, with the reason, if anything
    can still be written. `warnings` (said before the runs) are kept in results.json.

    Returns:
        The results dict also written to `out/results.json`, `spec.config()` as its config.
    """
    from lora_keras.report import write_report

    results = {"schema_version": 1, "created": _now(), "environment": describe_host()}
    results["config"] = spec.config()
    if warnings:
        results["warnings"] = list(warnings)
    results["runs"] = [placeholder(run, "not started") for run in runs]
    results_path = os.path.join(out, "results.json")
    os.makedirs(os.path.join(out, "runs"), exist_ok=True)
    save_results(results_path, results)
    with stop_on_signals() as stopping:
        try:
            for index, run in enumerate(runs):
                _run_one(results, index, spec, run, out, echo)
        except KeyboardInterrupt as error:
            # Signals from here on wait (`stop_on_signals`): the report gets written whole.
            signal_name = getattr(error, "signal_name", "SIGINT")
            results["interrupted"] = {"signal": signal_name, "at": _now()}
            save_results(results_path, results)
            # Written before anything is printed: after SIGHUP the terminal may be gone.
            write_report(out)
            say(f"\ninterrupted by {signal_name}: {out}/report.md holds the runs that finished")
            raise Interrupted(signal_name, out) from error
        stopping.hold()  # every run finished: a signal now waits for the report
        write_report(out)
    if stopping.caught:
        raise Interrupted(stopping.caught, out)
    return results


def save_results(path, results):
    """Writes results.json whole; a full disk is said with the folder it could not write in.

    results.json is rewritten whole each time, so the file it replaces is room enough for it:
    on a full disk that file is removed first and written again (if even that fails, the
    previous results.json is put back, and failing that it is absent: whole or absent).
    """
    try:
        atomic_write_json(path, results)
        return
    except OSError as error:
        if error.errno != errno.ENOSPC or not os.path.isfile(path):
            raise ResultsNotSaved(path, error) from error
        first = error
    with open(path, "rb") as file:
        previous = file.read()
    os.remove(path)
    try:
        atomic_write_json(path, results)
    except OSError:
        with contextlib.suppress(OSError):
            atomic_write_bytes(path, previous)
        raise ResultsNotSaved(path, first) from first


class ResultsNotSaved(OSError):
    """results.json could not be written (a full or read-only disk): says where, and what to do."""

    def __init__(self, path, error):
        folder = os.path.dirname(path) or "."
        super().__init__(
            error.errno,
            f"could not write {path}: {error.strerror or error}. The disk holding {folder} is "
            f"full or read-only; results.json there holds the last state that could be saved. "
            f"Free some space, then `lora-keras report {folder}` draws what it holds.",
        )

    def __str__(self):
        return self.strerror


def _run_one(results, index, spec, run, out, echo):
    count = len(results["runs"])
    results_path = os.path.join(out, "results.json")
    each = f" for each of {len(run.together)} adapters" if run.together else ""
    say(
        f"\n[{index + 1}/{count}] {run.name}: {spec.steps} steps, "
        f"batch {spec.batch_size} x {spec.sequence_length} tokens{each}"
    )
    results["runs"][index] = placeholder(run, "running")
    save_results(results_path, results)
    start = time.perf_counter()
    try:
        record = run_isolated(
            spec, run, os.path.join(out, "runs"), echo=echo, timeout_s=spec.timeout_s
        )
    except KeyboardInterrupt as error:
        signal_name = getattr(error, "signal_name", "SIGINT")
        results["runs"][index] = dict(
            placeholder(run, "interrupted"),
            error=f"stopped by {signal_name} after {time.perf_counter() - start:.1f} s",
            log=f"{run.name}.log",
        )
        raise
    record.setdefault("name", run.name)
    if record["status"] == "ok" and "backend" not in results["environment"]:
        results["environment"] = {**results["environment"], **_environment(record)}
    results["runs"][index] = record
    try:
        save_results(results_path, results)
    except ResultsNotSaved as error:
        # Not left "running": the run is over, and its record is what could not be saved.
        results["runs"][index] = dict(
            placeholder(run, "failed"), error=f"its results could not be saved: {error}"
        )
        with contextlib.suppress(OSError):
            save_results(results_path, results)
        raise
    say(
        f"[{index + 1}/{count}] {run.name}: {record['status']}"
        + (f" ({record['error']})" if record.get("error") else "")
    )


def _now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _environment(record):
    provenance = record.get("provenance", {})
    if provenance.get("weights") == "random":
        weights = f"random weights, {provenance.get('preset')} architecture (no download)"
    else:
        weights = f"pretrained weights of {provenance.get('preset')} ({provenance.get('source')})"
    return {
        **record.get("environment", {}),
        "weights_source": weights,
        "tokenizer_source": provenance.get("tokenizer"),
        "data_source": record.get("data_source"),
    }
