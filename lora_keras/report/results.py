"""Read and check `results.json`, and the few questions every part of a report asks of a run."""

import json
import os

from lora_keras.levers.options import options_label

RESULTS_FILE = "results.json"
SCHEMA_VERSION = 1


def load_results(folder):
    """Return the parsed `folder/results.json`, checked enough to draw a report from it."""
    path = os.path.join(os.fspath(folder), RESULTS_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path} not found: run `lora-keras compare` to create it, or pass the folder that "
            "holds it."
        )
    with open(path, encoding="utf-8") as file:
        try:
            results = json.load(file)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"{path} is not valid JSON ({error}): rerun the comparison to rewrite it."
            ) from error
    version = results.get("schema_version") if isinstance(results, dict) else None
    if version != SCHEMA_VERSION:
        raise ValueError(
            f"{path} has schema_version {version!r}, but this lora_keras reads schema_version "
            f"{SCHEMA_VERSION}: rerun the comparison with this version."
        )
    missing = [key for key in ("environment", "config", "runs") if key not in results]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)}: rerun the comparison to rewrite it.")
    for index, run in enumerate(results["runs"]):
        missing = [key for key in ("mode", "status") if key not in run]
        if missing:
            raise ValueError(
                f"{path}: run {index} lacks {', '.join(missing)}: rerun the comparison to "
                "rewrite it."
            )
    return results


def run_label(run):
    """Name a run in tables and legends: its mode, its rank where it has one, its levers."""
    rank = run.get("rank")
    label = run["mode"] if rank is None else f"{run['mode']} r={rank}"
    levers = options_label(run.get("options") or {})
    return f"{label} {levers}" if levers else label


def measured_runs(runs, *fields):
    """The runs that finished and recorded every one of `fields` (failed runs are listed apart)."""
    return [
        run
        for run in runs
        if run["status"] == "ok" and all(run.get(field) is not None for field in fields)
    ]


def full_run(runs):
    """The first finished full fine-tuning run with a step time, the baseline; `None` if none."""
    return next(iter(measured_runs([r for r in runs if r["mode"] == "full"], "step_time_s")), None)
