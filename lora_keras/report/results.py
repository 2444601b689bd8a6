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
    check_results(results, path)
    return results


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _numbers(value):
    return isinstance(value, list) and all(_is_number(item) for item in value)


def _is_mapping_of_numbers(value):
    return isinstance(value, dict) and all(_is_number(item) for item in value.values())


# What each field a report reads must hold, checked before anything is drawn.
_KINDS = {
    "a text": lambda value: isinstance(value, str),
    "a number": _is_number,
    "an integer": lambda value: isinstance(value, int) and not isinstance(value, bool),
    "a list of numbers": _numbers,
    "an object of numbers": _is_mapping_of_numbers,
    "an object": lambda value: isinstance(value, dict),
    "an object of number lists": lambda value: (
        isinstance(value, dict) and all(_numbers(item) for item in value.values())
    ),
    "an object of objects": lambda value: (
        isinstance(value, dict) and all(isinstance(item, dict) for item in value.values())
    ),
    "a list of objects": lambda value: (
        isinstance(value, list) and all(isinstance(item, dict) for item in value)
    ),
}
RUN_FIELDS = {
    "mode": "a text",
    "status": "a text",
    "error": "a text",
    "rank": "an integer",
    "trainable_params": "a number",
    "total_params": "a number",
    "first_step_s": "a number",
    "step_time_s": "a number",
    "step_time_p25_s": "a number",
    "step_time_p75_s": "a number",
    "tokens_per_s": "a number",
    "peak_memory_bytes": "a number",
    "memory_source": "a text",
    "runtime_memory_bytes": "a number",
    "estimated_memory_bytes": "a number",
    "estimate": "an object of numbers",
    "loss": "a list of numbers",
    "memory_over_steps": "a list of numbers",
    "memory_in_use_over_steps": "a list of numbers",
    "samples": "a list of objects",
    "stored_weight_bytes": "a number",
    "memory_checkpoints": "an object of numbers",
    "options": "an object",
    "mixlora": "an object",
    "expert_loads": "an object of number lists",
    "eval": "an object of objects",
    "eval_time_s": "a number",
    "train_time_s": "a number",
    "wall_time_s": "a number",
    "adapters": "a list of objects",
}
REQUIRED_RUN_FIELDS = ("mode", "status")
# The keys a report reads inside a run's objects, wherever the object is recorded.
NESTED_RUN_FIELDS = {
    "memory_checkpoints": (
        "after_imports",
        "model_built",
        "optimizer_built",
        "after_first_step",
        "peak",
    ),
    "estimate": ("weights", "gradients", "optimizer_state", "activations", "total"),
}
# What each adapter of a run trained `together` holds (`lora_keras.report.together`).
ADAPTER_FIELDS = {"name": "a text", "rank": "an integer", "loss": "a list of numbers"}
# What each held-out data set of a run's `eval` holds (`lora_keras.report.quality`).
EVAL_FIELDS = {"before": "a number", "after": "a number", "tokens": "an integer"}
# Fields a report reads together: where the first is recorded, the second must be too.
TOGETHER = {"expert_loads": "mixlora", "mixlora": "expert_loads"}


def check_results(results, path):
    """Raises ValueError naming the first field of `results` a report could not draw from."""

    def refuse(field, kind, value):
        raise ValueError(
            f"{path}: {field} must be {kind}, got {value!r}. Fix it by hand or rerun the "
            "comparison to rewrite it."
        )

    for key in ("environment", "config"):
        if not isinstance(results[key], dict):
            refuse(key, "an object", results[key])
    if not isinstance(results["runs"], list):
        refuse("runs", "a list", results["runs"])
    for index, run in enumerate(results["runs"]):
        if not isinstance(run, dict):
            refuse(f"runs[{index}]", "an object", run)
        missing = [key for key in REQUIRED_RUN_FIELDS if key not in run]
        if missing:
            raise ValueError(
                f"{path}: runs[{index}] lacks {', '.join(missing)}: rerun the comparison to "
                "rewrite it."
            )
        for field, kind in RUN_FIELDS.items():
            value = run.get(field)
            if (value is not None or field in REQUIRED_RUN_FIELDS) and not _KINDS[kind](value):
                refuse(
                    f"runs[{index}].{field}",
                    kind + (" or null" * (field not in REQUIRED_RUN_FIELDS)),
                    value,
                )
        for field, keys in NESTED_RUN_FIELDS.items():
            missing = [key for key in keys if run.get(field) is not None and key not in run[field]]
            if missing:
                raise ValueError(
                    f"{path}: runs[{index}].{field} lacks {', '.join(missing)}: fix it by hand "
                    "or rerun the comparison to rewrite it."
                )
        _check_eval(run, f"runs[{index}]", refuse)
        for number, adapter in enumerate(run.get("adapters") or []):
            where = f"runs[{index}].adapters[{number}]"
            for key, kind in ADAPTER_FIELDS.items():  # a run not yet finished has its rank only
                if adapter.get(key) is not None and not _KINDS[kind](adapter[key]):
                    refuse(f"{where}.{key}", kind + " or null", adapter[key])
            _check_eval(adapter, where, refuse)
        for field, other in TOGETHER.items():
            if run.get(field) is not None and run.get(other) is None:
                raise ValueError(
                    f"{path}: runs[{index}] has {field} but no {other}, which the report reads "
                    "with it: fix it by hand or rerun the comparison to rewrite it."
                )
        for number, sample in enumerate(run.get("samples") or []):
            for field in ("prompt", "text"):
                if not isinstance(sample.get(field), str):
                    refuse(f"runs[{index}].samples[{number}].{field}", "a text", sample.get(field))


def _check_eval(holder, where, refuse):
    """The held-out losses of a run (or of one of its adapters), as the report reads them."""
    for name, losses in (holder.get("eval") or {}).items():
        if not isinstance(losses, dict):
            refuse(f"{where}.eval.{name}", "an object", losses)
        for key, kind in EVAL_FIELDS.items():
            if not _KINDS[kind](losses.get(key)):
                refuse(f"{where}.eval.{name}.{key}", kind, losses.get(key))


# Statuses of runs that never ran to an end: the comparison stopped before or during them.
UNFINISHED = ("not started", "running", "interrupted")


def unfinished_runs(results):
    """`[(label, status)]` of the runs the comparison planned but did not finish."""
    return [
        (run_label(run), run["status"]) for run in results["runs"] if run["status"] in UNFINISHED
    ]


def run_label(run):
    """Name a run in tables and legends: its mode, its rank where it has one, its levers."""
    rank = run.get("rank")
    label = run["mode"] if rank is None else f"{run['mode']} r={rank}"
    if run.get("adapters"):  # several ranks trained together, one adapter each
        label += " together r=" + ",".join(str(adapter.get("rank")) for adapter in run["adapters"])
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
