"""The planner against every committed measurement: fits its few constants, writes the table.

    python benchmarks/planner_calibration.py           # the table: planner-calibration.md
    python benchmarks/planner_calibration.py --write   # refit, write the constants into
                                                       # lora_keras/planner/ first

Every run of benchmarks/results/*/results.json is predicted from its configuration alone
(`lora_keras.planner.from_results`). What is fitted, per backend and kind of device
(`Framework.fitted`): `runtime`, the median of the runs' `memory_checkpoints.after_imports`
(a CPU's floor, measured before any model exists); then `constant`, `kept` and `update` by least
squares of predicted against measured peaks over that group's runs. Folders named
`planner-check-*` hold out-of-sample checks: predicted before they were measured, never fitted.
"""

import argparse
import glob
import json
import os
import re
import statistics
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from lora_keras.levers.options import options_label  # noqa: E402
from lora_keras.planner import framework as frameworks  # noqa: E402
from lora_keras.planner.from_results import predict_run, run_configuration  # noqa: E402
from lora_keras.units import format_bytes  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..")
RESULTS = os.path.join(ROOT, "benchmarks", "results")
TABLE = os.path.join(RESULTS, "planner-calibration.md")
CHECK_PREFIX = "planner-check-"
# Results measured after the planner's constants were fitted (gpt2_mini's learn/forget run, the
# sweeps trained together): out of sample like the planner-check folders, so never fitted on.
MEASURED_AFTER_CALIBRATION = ("learn-forget-cpu", "sweep-together-cpu", "sweep-together-cpu-remat")
GOALS = {"gpu": 0.10, "cpu": 0.10}


def measured_runs(check=False):
    """`(folder, results, run)` for every run with a measured peak; `check`: the held-out ones."""
    rows = []
    for path in sorted(glob.glob(os.path.join(RESULTS, "*", "results.json"))):
        folder = os.path.basename(os.path.dirname(path))
        out_of_sample = folder.startswith(CHECK_PREFIX) or folder in MEASURED_AFTER_CALIBRATION
        if out_of_sample != check:
            continue
        with open(path) as file:
            results = json.load(file)
        for run in results["runs"]:
            if run.get("status") == "ok" and run.get("peak_memory_bytes"):
                rows.append((folder, results, run))
    return rows


def group_of(results, run):
    config = run_configuration(results, run)
    jax_xla = config["backend"] == "jax" and config["options"].get("jit_compile")
    return ("jax-xla" if jax_xla else config["backend"], config["device_kind"])


def fit(rows):
    """The fitted constants of every group with runs, `{group: {name: value}}`."""
    frameworks.FITTED.clear()
    groups = {}
    for row in rows:
        groups.setdefault(group_of(row[1], row[2]), []).append(row)
    # A group that takes another's `update` is fitted after it.
    for key, members in sorted(
        groups.items(), key=lambda kv: bool(frameworks.FRAMEWORKS[kv[0]].update_as)
    ):
        names = [n for n in frameworks.FRAMEWORKS[key].fitted if n != "runtime"]
        values = {}
        if "runtime" in frameworks.FRAMEWORKS[key].fitted:
            floors = [run["memory_checkpoints"]["after_imports"] for _, _, run in members]
            values["runtime"] = int(statistics.median(floors))
        # From the derived values (an update's 3 temporaries), so each run starts in its phase.
        values.update({name: getattr(frameworks.FRAMEWORKS[key], name) for name in names})
        for _ in range(6):  # piecewise linear: the phases settle in a few rounds
            frameworks.FITTED[key] = dict(values)
            base = np.array([predict_run(r, run)[0]["total"] for _, r, run in members], float)
            columns = []
            for name in names:
                frameworks.FITTED[key] = {**values, name: values[name] + 1}
                moved = np.array([predict_run(r, run)[0]["total"] for _, r, run in members])
                columns.append(moved - base)
            measured = np.array([run["peak_memory_bytes"] for _, _, run in members], float)
            if names:
                solution, *_ = np.linalg.lstsq(np.array(columns).T, measured - base, rcond=None)
                for name, step in zip(names, solution, strict=True):
                    values[name] += step
        values = {
            name: int(round(value)) if name in ("runtime", "constant") else round(float(value), 3)
            for name, value in values.items()
        }
        frameworks.FITTED[key] = values
    return dict(frameworks.FITTED)


def speed_costs(rows):
    """`{group: {lever label: step time with it / LoRA's without}}`, medians over the runs."""
    times = {}
    for _, results, run in rows:
        if run.get("step_time_s") and run["mode"] in ("lora", "qlora"):
            label = options_label(run["options"])
            label = "+".join(p for p in ("qlora" if run["mode"] == "qlora" else "", label) if p)
            times.setdefault(group_of(results, run), {}).setdefault(label, []).append(
                run["step_time_s"]
            )
    costs = {}
    for group, labels in sorted(times.items()):
        if "" in labels:
            base = statistics.median(labels[""])
            costs[group] = {
                label: round(statistics.median(values) / base, 2)
                for label, values in sorted(labels.items())
                if label
            }
    return costs


def write_block(module, name, marker, mapping):
    path = os.path.join(ROOT, "lora_keras", "planner", module)
    with open(path) as file:
        source = file.read()
    lines = [f"{name} = {{"]
    for key, values in sorted(mapping.items()):
        lines.append(f"    {key!r}: {values!r},")
    lines.append("}")
    source = re.sub(
        rf"(# {marker}-BEGIN[^\n]*\n).*?(\n# {marker}-END)",
        lambda m: m.group(1) + "\n".join(lines) + m.group(2),
        source,
        flags=re.S,
    )
    with open(path, "w") as file:
        file.write(source)


def table_rows(rows):
    out = []
    for folder, results, run in rows:
        components, phase = predict_run(results, run)
        config = run_configuration(results, run)
        levers = "+".join(k for k, v in run["options"].items() if v) or "-"
        measured = run["peak_memory_bytes"]
        out.append(
            {
                "folder": folder,
                "run": run.get("name") or run["mode"],
                "group": "/".join(group_of(results, run)),
                "mode": run["mode"],
                "levers": levers,
                "shape": f"{config['preset']} {config['batch_size']}x{config['sequence_length']}",
                "measured": measured,
                "predicted": components["total"],
                "error": components["total"] / measured - 1,
                "phase": phase,
            }
        )
    return out


def markdown(rows, fitted):
    lines = [
        "# The planner against every committed measurement",
        "",
        "Written by `python benchmarks/planner_calibration.py` from `benchmarks/results/*/"
        "results.json`; each run predicted from its configuration alone (no model built). "
        "Error: predicted / measured - 1. Goal: within +-10%.",
        "",
        "Fitted constants per group (backend or JAX with XLA / device kind); everything else "
        "is derived (`lora_keras/planner/framework.py` says what and why):",
        "",
    ]
    for key, values in sorted(fitted.items()):
        shown = ", ".join(
            f"{n} {format_bytes(v)}" if n in ("runtime", "constant") else f"{n} {v}"
            for n, v in values.items()
        )
        runs = sum(1 for r in rows if r["group"] == "/".join(key))
        lines.append(f"- {'/'.join(key)} ({runs} runs): {shown or 'nothing fitted'}")
    lines += [
        "",
        "Runs beyond the constants fitted on them (the runtime aside, a median of a measured "
        "floor) are the group's checks; where none are left, its rows are a fit, not a check.",
        "",
        "| group | worst error | runs | constants fitted | checks |",
        "| --- | --- | --- | --- | --- |",
    ]
    for group in sorted({r["group"] for r in rows}):
        members = [r for r in rows if r["group"] == group]
        worst = max(members, key=lambda r: abs(r["error"]))
        fitted_names = [n for n in fitted.get(tuple(group.split("/")), {}) if n != "runtime"]
        checks = len(members) - len(fitted_names)
        lines.append(
            f"| {group} | {worst['error']:+.1%} ({worst['run']}) | {len(members)} | "
            f"{len(fitted_names)} | {checks if checks > 0 else 'none: a fit'} |"
        )
    lines += [
        "",
        "| folder | run | group | levers | shape | measured | predicted | error | phase |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['folder']} | {r['run']} | {r['group']} | {r['levers']} | {r['shape']} | "
            f"{format_bytes(r['measured'])} | {format_bytes(r['predicted'])} | "
            f"{r['error']:+.1%} | {r['phase']} |"
        )
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="refit and write the constants")
    args = parser.parse_args()
    rows = measured_runs()
    if args.write:
        fitted = fit(rows)
        write_block("framework.py", "FITTED", "FITTED", fitted)
        write_block("speed_costs.py", "SPEED_COSTS", "SPEED", speed_costs(rows))
    else:
        fitted = dict(frameworks.FITTED)
    table = table_rows(rows)
    with open(TABLE, "w") as file:
        file.write(markdown(table, fitted))
    for r in table:
        print(f"{r['group']:16s} {r['folder'][:26]:26s} {r['run'][:34]:34s} {r['error']:+6.1%}")


if __name__ == "__main__":
    main()
