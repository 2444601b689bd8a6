"""The report's PNG plots, each drawn from `results.json` alone.

Figures are built with `matplotlib.figure.Figure`, which renders with Agg, rather than pyplot:
no global backend switch (which would break a notebook's inline plots) and no figure kept alive
by pyplot's registry. Every axis says its unit; byte and time units are chosen from the data.
"""

import io
import os
import textwrap

import numpy as np
from matplotlib.figure import Figure

from lora_keras.io_utils import atomic_write_bytes
from lora_keras.measure.estimate_text import COMPONENT_NOTES
from lora_keras.report.expert_loads import expert_loads_figure
from lora_keras.report.levers_plots import checkpoints_figure, levers_figure
from lora_keras.report.quality import learn_forget_figure
from lora_keras.report.results import full_run, measured_runs, run_label
from lora_keras.report.together import together_figure
from lora_keras.units import byte_unit


def draw_plots(results, folder):
    """Write every plot the results have data for.

    A plot without data is not drawn, and an older file of that name is removed, so the folder
    holds exactly the plots of these results. A plot that cannot be written (a full disk) is
    skipped and said; the others are still drawn.

    Returns:
        `(written, not_drawn)`: `[(filename, title)]` of the plots written and
        `[(filename, reason)]` of those that could not be.
    """
    written, not_drawn = [], []
    missing = _missing_note(results["runs"])
    for filename, title, make_figure in _PLOTS:
        path = os.path.join(folder, filename)
        figure = make_figure(results, title)
        if figure is None:
            if os.path.exists(path):
                os.remove(path)
            continue
        if missing:
            # Below the figure, outside its layout; `bbox_inches="tight"` keeps it in the PNG.
            figure.text(0.5, 0, missing, ha="center", va="top", fontsize="small", color="darkred")
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight" if missing else None)
        try:
            atomic_write_bytes(path, buffer.getvalue())
        except OSError as error:
            not_drawn.append((filename, f"could not be written: {error.strerror or error}"))
            continue
        written.append((filename, title))
    return written, not_drawn


def _missing_note(runs):
    """The caption naming the runs a plot cannot show because they did not finish."""
    missing = [f"{run_label(run)} ({run['status']})" for run in runs if run["status"] != "ok"]
    return textwrap.fill("Not shown: " + ", ".join(missing), 110) if missing else None


def _memory_figure(results, title):
    runs = [
        run
        for run in results["runs"]
        if run["status"] == "ok" and (run.get("peak_memory_bytes") or run.get("estimate"))
    ]
    if not runs:
        return None
    peaks = np.array([run.get("peak_memory_bytes") or 0 for run in runs], dtype=float)
    estimates = {
        name: np.array([(run.get("estimate") or {}).get(name, 0) for run in runs], dtype=float)
        for name in COMPONENT_NOTES
    }
    # The runtime (measured before the model was built) sits under the estimate: together
    # they are the floor a measured peak can be compared with.
    estimates = {
        "runtime_measured": np.array(
            [run.get("runtime_memory_bytes") or 0 for run in runs], dtype=float
        ),
        **estimates,
    }
    unit, size = byte_unit(max(peaks.max(), sum(estimates.values()).max()))
    figure, axes = _figure(len(runs))
    positions = np.arange(len(runs))
    axes.bar(positions - 0.2, peaks / size, 0.4, color="black", label="measured peak")
    bottom = np.zeros(len(runs))
    for name, values in estimates.items():
        if not values.any():
            continue
        label = (
            "runtime before the model (measured)"
            if name == "runtime_measured"
            else "estimate: " + name.replace("_", " ")
        )
        axes.bar(positions + 0.2, values / size, 0.4, bottom=bottom, label=label)
        bottom += values / size
    axes.set_xticks(positions, [run_label(run) for run in runs])
    axes.set_ylabel(f"memory ({unit})")
    axes.set_title(title)
    axes.legend(fontsize="small")
    _caption_sources(figure, runs)
    return figure


def _step_time_figure(results, title):
    runs = measured_runs(results["runs"], "step_time_s")
    if not runs:
        return None
    unit, size = _time_unit(max(run["step_time_s"] for run in runs))
    medians = np.array([run["step_time_s"] for run in runs]) / size
    # Where a spread is missing the bar has no whisker on that side rather than a made-up one.
    low = np.array([run.get("step_time_p25_s") or run["step_time_s"] for run in runs]) / size
    high = np.array([run.get("step_time_p75_s") or run["step_time_s"] for run in runs]) / size
    figure, axes = _figure(len(runs))
    positions = np.arange(len(runs))
    axes.bar(positions, medians, 0.6, yerr=[medians - low, high - medians], capsize=6)
    for position, median in zip(positions, medians, strict=True):
        # Inside the bar, where the whiskers cannot cover it.
        axes.text(position, median / 2, f"{median:.3g}", ha="center", color="white")
    axes.set_xticks(positions, [run_label(run) for run in runs])
    axes.set_ylabel(f"step time ({unit})")
    axes.set_title(title)
    return figure


def _loss_figure(results, title):
    runs = [run for run in measured_runs(results["runs"], "loss") if run["loss"]]
    if not runs:
        return None
    figure, axes = _figure(0)
    for run in runs:
        axes.plot(np.arange(1, len(run["loss"]) + 1), run["loss"], label=run_label(run))
    axes.set_xlabel("training step")
    axes.set_ylabel("training loss")
    axes.set_title(title)
    axes.legend(fontsize="small")
    return figure


def _memory_over_steps_figure(results, title):
    runs = [
        run
        for run in measured_runs(results["runs"], "memory_over_steps")
        if run["memory_over_steps"]
    ]
    if not runs:
        return None
    unit, size = byte_unit(max(max(run["memory_over_steps"]) for run in runs))
    figure, axes = _figure(0)
    for run in runs:
        values = np.array(run["memory_over_steps"], dtype=float) / size
        steps = np.arange(1, len(values) + 1)
        (line,) = axes.plot(steps, values, marker=".", label=f"{run_label(run)}: peak so far")
        in_use = run.get("memory_in_use_over_steps")
        if in_use:
            axes.plot(
                steps,
                np.array(in_use, dtype=float) / size,
                linestyle="--",
                color=line.get_color(),
                label=f"{run_label(run)}: in use",
            )
    axes.xaxis.get_major_locator().set_params(integer=True)
    axes.set_xlabel("training step")
    axes.set_ylabel(f"memory ({unit})")
    axes.set_title(title)
    axes.legend(fontsize="small")
    _caption_sources(figure, runs)
    return figure


def _sweep_figure(results, title):
    if results["config"].get("kind") != "sweep":
        return None
    runs = sorted(
        (run for run in results["runs"] if run["status"] == "ok" and run.get("rank") is not None),
        key=lambda run: run["rank"],
    )
    if not runs:
        return None
    full = full_run(results["runs"])
    with_full = runs + ([full] if full else [])
    memory_unit, memory_size = byte_unit(
        max((run.get("peak_memory_bytes") or 0 for run in with_full), default=0)
    )
    time_unit, time_size = _time_unit(
        max((run.get("step_time_s") or 0 for run in with_full), default=0)
    )
    # Trainable weights span orders of magnitude between LoRA and full fine-tuning: a log axis.
    panels = (
        ("trainable weights", lambda run: run.get("trainable_params"), 1, "log"),
        (
            f"peak memory ({memory_unit})",
            lambda run: run.get("peak_memory_bytes"),
            memory_size,
            "linear",
        ),
        (
            f"step time, median ({time_unit})",
            lambda run: run.get("step_time_s"),
            time_size,
            "linear",
        ),
        ("final training loss", lambda run: (run.get("loss") or [None])[-1], 1, "linear"),
    )
    figure = Figure(figsize=(10, 7), layout="constrained")
    figure.suptitle(title)
    for axes, (ylabel, value_of, size, yscale) in zip(
        figure.subplots(2, 2).flat, panels, strict=True
    ):
        points = [(run["rank"], value_of(run) / size) for run in runs if value_of(run) is not None]
        if points:
            axes.plot(*zip(*points, strict=True), marker="o", label="LoRA")
        if full is not None and value_of(full) is not None:
            axes.axhline(value_of(full) / size, color="gray", linestyle="--", label="full")
        axes.set_xscale("log", base=2)
        axes.set_yscale(yscale)
        axes.set_xticks([run["rank"] for run in runs], [str(run["rank"]) for run in runs])
        axes.set_xlabel("LoRA rank")
        axes.set_ylabel(ylabel)
        axes.legend(fontsize="small")
    return figure


def _figure(bars):
    # Bar charts widen with the number of runs so that their labels stay readable.
    figure = Figure(figsize=(max(6.4, 1.1 * bars + 2), 4.8), layout="constrained")
    return figure, figure.subplots()


def _caption_sources(figure, runs):
    sources = sorted({run["memory_source"] for run in runs if run.get("memory_source")})
    if sources:
        caption = "Measured: " + "; ".join(sources)
        figure.supxlabel(textwrap.fill(caption, 110), fontsize="small")


def _time_unit(largest):
    return ("ms", 1e-3) if largest < 1 else ("s", 1.0)


_PLOTS = (
    ("memory.png", "Peak memory: measured vs estimated by component", _memory_figure),
    (
        "step_time.png",
        "Steady-state step time (median; bars: 25th-75th percentile)",
        _step_time_figure,
    ),
    ("loss.png", "Training loss per step", _loss_figure),
    ("learn_forget.png", "What each run learned against what it forgot", learn_forget_figure),
    ("memory_over_steps.png", "Memory after each training step", _memory_over_steps_figure),
    ("sweep.png", "LoRA rank sweep", _sweep_figure),
    ("together.png", "LoRA ranks trained together on one frozen model vs alone", together_figure),
    ("expert_loads.png", "MixLoRA expert loads per layer", expert_loads_figure),
    ("levers.png", "Each run's step time and peak memory (options in the labels)", levers_figure),
    (
        "memory_checkpoints.png",
        "Memory in use at fixed points of each run, beside the estimate",
        checkpoints_figure,
    ),
)
