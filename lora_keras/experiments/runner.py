"""The one runner of `compare`, `sweep` and the benchmarks: each planned run in its own process.

results.json is saved before and after every run, so a comparison that dies says which runs it
lacks, and report.md is drawn from it once the runs end (or are interrupted).
"""

import datetime
import os
import time

from lora_keras.experiments.isolated_run import run_isolated
from lora_keras.experiments.signals import Interrupted, stop_on_signals
from lora_keras.io_utils import atomic_write_json


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
    }


def run_specs(spec, runs, out, echo=True):
    """Runs each of `runs` (`PlannedRun`s of `spec`) in its own process, into `out`.

    A run that fails is recorded with its status and error and the others go on. Every
    planned run is listed from the start ("not started", then "running"), so a comparison
    that dies says which runs it lacks; Ctrl-C, SIGTERM and SIGHUP stop the running child,
    mark it "interrupted", write the report of what finished and raise `Interrupted`.

    Returns:
        The results dict also written to `out/results.json`, `spec.config()` as its config.
    """
    from lora_keras.report import write_report

    results = {"schema_version": 1, "created": _now(), "environment": {}}
    results["config"] = spec.config()
    results["runs"] = [placeholder(run, "not started") for run in runs]
    results_path = os.path.join(out, "results.json")
    os.makedirs(os.path.join(out, "runs"), exist_ok=True)
    atomic_write_json(results_path, results)
    try:
        with stop_on_signals():
            for index, run in enumerate(runs):
                _run_one(results, index, spec, run, out, echo)
                atomic_write_json(results_path, results)
    except KeyboardInterrupt as error:
        signal_name = getattr(error, "signal_name", "SIGINT")
        results["interrupted"] = {"signal": signal_name, "at": _now()}
        atomic_write_json(results_path, results)
        # Written before anything is printed: after SIGHUP the terminal may be gone.
        write_report(out)
        say(f"\ninterrupted by {signal_name}: {out}/report.md holds the runs that finished")
        raise Interrupted(signal_name, out) from error
    write_report(out)
    return results


def _run_one(results, index, spec, run, out, echo):
    count = len(results["runs"])
    say(
        f"\n[{index + 1}/{count}] {run.name}: {spec.steps} steps, "
        f"batch {spec.batch_size} x {spec.sequence_length} tokens"
    )
    results["runs"][index] = placeholder(run, "running")
    atomic_write_json(os.path.join(out, "results.json"), results)
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
    if record["status"] == "ok" and not results["environment"]:
        results["environment"] = _environment(record)
    results["runs"][index] = record
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
