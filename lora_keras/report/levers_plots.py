"""The report's plots of the levers and of the memory checkpoints, from `results.json` alone."""

import numpy as np
from matplotlib.figure import Figure

from lora_keras.levers.options import options_label
from lora_keras.measure.estimate_text import COMPONENT_NOTES
from lora_keras.report.levers_markdown import MEMORY_GOAL, SPEED_GOAL, has_levers
from lora_keras.report.results import measured_runs, run_label
from lora_keras.units import byte_unit

CHECKPOINTS = ("after_imports", "model_built", "optimizer_built", "after_first_step", "peak")


def checkpoints_figure(results, title):
    """Per run: the memory in use at each checkpoint (a step a bar) beside the estimate."""
    runs = measured_runs(results["runs"], "memory_checkpoints", "estimate")
    if not runs:
        return None
    largest = max(run["memory_checkpoints"]["peak"] for run in runs)
    unit, size = byte_unit(largest)
    figure = Figure(figsize=(max(6.4, 1.6 * len(runs) + 2), 5.2), layout="constrained")
    axes = figure.subplots()
    positions = np.arange(len(runs))
    colors = dict(
        zip(CHECKPOINTS, ("#bbbbbb", "#8da0cb", "#66c2a5", "#fc8d62", "#e78ac3"), strict=True)
    )
    # Measured: each checkpoint's increase over the one before, stacked up to the peak.
    bottom = np.zeros(len(runs))
    for name in CHECKPOINTS:
        values = np.array([run["memory_checkpoints"][name] for run in runs], dtype=float) / size
        axes.bar(
            positions - 0.2,
            np.maximum(values - bottom, 0),
            0.4,
            bottom=bottom,
            color=colors[name],
            label=f"measured: up to {name.replace('_', ' ')}",
        )
        bottom = np.maximum(bottom, values)
    # Estimated: the runtime (measured before the model) and the estimate's components.
    bottom = np.array([run["memory_checkpoints"]["after_imports"] for run in runs], dtype=float)
    bottom /= size
    axes.bar(positions + 0.2, bottom, 0.4, color=colors["after_imports"], hatch="//")
    for name in COMPONENT_NOTES:
        # A component some estimates lack (`dora`) counts 0 where it is absent.
        values = np.array([run["estimate"].get(name, 0) for run in runs], dtype=float) / size
        axes.bar(positions + 0.2, values, 0.4, bottom=bottom, label=f"estimate: {name}", alpha=0.7)
        bottom += values
    # What no component explains: the rest of the measured peak.
    peaks = np.array([run["memory_checkpoints"]["peak"] for run in runs], dtype=float) / size
    axes.bar(
        positions + 0.2,
        np.maximum(peaks - bottom, 0),
        0.4,
        bottom=bottom,
        fill=False,
        hatch="xx",
        label="unexplained: peak - runtime - estimate",
    )
    axes.set_xticks(positions, [run_label(run) for run in runs], rotation=20, ha="right")
    axes.set_ylabel(f"memory in use ({unit})")
    axes.set_title(title)
    axes.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.supxlabel(
        "left bar: measured at checkpoints; right bar: runtime (hatched, measured) + estimate",
        fontsize="small",
    )
    return figure


def levers_figure(results, title):
    """One bar a run: step time and peak memory, with the goal lines where their runs exist."""
    runs = measured_runs(results["runs"], "step_time_s", "peak_memory_bytes")
    if not runs or not has_levers(runs):
        return None
    unit, size = byte_unit(max(run["peak_memory_bytes"] for run in runs))
    figure = Figure(figsize=(max(8, 0.9 * len(runs) + 3), 7), layout="constrained")
    figure.suptitle(title)
    time_axes, memory_axes = figure.subplots(2, 1, sharex=True)
    positions = np.arange(len(runs))
    time_axes.bar(positions, [run["step_time_s"] for run in runs], 0.6)
    time_axes.set_ylabel("step time, median (s)")
    memory_axes.bar(positions, [run["peak_memory_bytes"] / size for run in runs], 0.6)
    memory_axes.set_ylabel(f"peak memory ({unit})")
    plain = [run for run in runs if not _has_options(run)]
    peer = next((run for run in plain if run["mode"] == "keras_lora"), None)
    full = next((run for run in plain if run["mode"] == "full"), None)
    if peer is not None:
        time_axes.axhline(
            SPEED_GOAL * peer["step_time_s"],
            color="red",
            linestyle="--",
            label=f"goal: {SPEED_GOAL:.2f}x keras_lora",
        )
        time_axes.legend(fontsize="small")
    if full is not None:
        memory_axes.axhline(
            MEMORY_GOAL * full["peak_memory_bytes"] / size,
            color="red",
            linestyle="--",
            label=f"goal: {MEMORY_GOAL:.2f}x full",
        )
        memory_axes.legend(fontsize="small")
    memory_axes.set_xticks(positions, [run_label(run) for run in runs], rotation=25, ha="right")
    return figure


def _has_options(run):
    return bool(options_label(run.get("options") or {}))
