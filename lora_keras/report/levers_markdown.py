"""The report's sections on the levers: each run's options, what each bought, the goals.

Every number is read from `results.json`; a run's baseline is the run of the same mode and
rank with every option at its default but those all runs share (`plain_run`).
"""

import functools
import math

from lora_keras.levers.options import (
    LOSS_TOLERANCE,
    OPTIONS,
    PRECISION_OPTIONS,
    default_options,
    options_label,
)
from lora_keras.report.results import measured_runs, run_label
from lora_keras.units import format_bytes, format_seconds

MISSING = "n/a"
# The goals of issue 12: LoRA's best-memory peak against full fine-tuning's plain peak, and
# LoRA's best-speed step against Keras's built-in LoRA at its defaults.
MEMORY_GOAL = 0.40
SPEED_GOAL = 0.70


def has_levers(runs):
    return any(options_label(run.get("options") or {}) for run in runs)


def plain_run(runs, run):
    """The finished run of `run`'s mode and rank with no option but those all runs share.

    Options every run has are the experiment's own (`compare --jit-compile` under JAX), not a
    lever being measured; with none shared, the plain run has every option at its default.
    None when no such run finished.
    """
    finished = measured_runs(runs, "step_time_s")
    shared = _shared_options(finished)
    for other in finished:
        same = other["mode"] == run["mode"] and other.get("rank") == run.get("rank")
        if same and _options(other) == shared:
            return other
    return None


def _options(run):
    """Every option of `run`, defaults filled in (a run recorded before an option existed)."""
    return default_options() | (run.get("options") or {})


def _shared_options(runs):
    """Each option at the value every run gives it, where they all agree; else its default."""
    values = [_options(run) for run in runs]
    shared = default_options()
    for name in shared:
        if values and all(value[name] == values[0][name] for value in values):
            shared[name] = values[0][name]
    return shared


def compile_seconds(run):
    """What the first step cost beyond a steady step: tracing, and with XLA compiling."""
    return run["first_step_s"] - run["step_time_s"]


def paid_off_after(run, plain):
    """Steps after which `run` has taken no longer in all than `plain`; None if never."""
    extra_first = run["first_step_s"] - plain["first_step_s"]
    if extra_first <= 0:
        return 1
    saved_per_step = plain["step_time_s"] - run["step_time_s"]
    if saved_per_step <= 0:
        return None
    return 1 + math.ceil(extra_first / saved_per_step)


def loss_check(run, plain):
    """`(relative difference of the final loss from plain's, tolerance)`; None without both."""
    if not (run.get("loss") and plain and plain.get("loss")):
        return None
    options = run.get("options") or {}
    tolerance = max(
        (LOSS_TOLERANCE[name] for name in OPTIONS if options.get(name) != OPTIONS[name][0]),
        default=1e-6,
    )
    difference = abs(run["loss"][-1] - plain["loss"][-1]) / abs(plain["loss"][-1])
    return difference, tolerance


def levers_section(runs):
    """The options of each run, their cost and gain against the plain run; None if no lever."""
    if not has_levers(runs):
        return None
    header = (
        "| run | " + " | ".join(OPTIONS) + " | compile (first step - median) | step vs plain "
        "| peak vs plain | compile paid off after | final loss vs plain, relative (tolerance) |"
    )
    rows = [header, "|" + "---|" * (len(OPTIONS) + 6)]
    for run in measured_runs(runs, "step_time_s"):
        plain = plain_run(runs, run)
        options = run.get("options") or {}
        cells = [run_label(run)] + [_cell(options.get(name, OPTIONS[name][0])) for name in OPTIONS]
        cells.append(f"{compile_seconds(run):.1f} s")
        if plain is None or plain is run:
            cells += ["(plain)" if plain is run else MISSING] + [""] * 3
        else:
            check = loss_check(run, plain)
            paid = paid_off_after(run, plain)
            cells += [
                f"{run['step_time_s'] / plain['step_time_s']:.2f}x",
                f"{run['peak_memory_bytes'] / plain['peak_memory_bytes']:.2f}x",
                "never" if paid is None else f"{paid} step{'s' if paid > 1 else ''}",
                MISSING
                if check is None
                else f"{check[0]:.1e} ({check[1]:.0e}: {'ok' if check[0] <= check[1] else 'OUT'})",
            ]
        rows.append("| " + " | ".join(cells) + " |")
    meanings = "\n".join(f"- `{name}`: {meaning}." for name, (_, meaning) in OPTIONS.items())
    note = (
        "A run's baseline is the run of the same mode with every option off but those all "
        'runs share. "Paid off after": '
        "the number of steps after which the run has taken no more time in all (its first "
        "step included) than its baseline."
    )
    return "## Levers\n\n" + "\n".join(rows) + "\n\n" + meanings + "\n\n" + note


def goals_section(runs):
    """LoRA's best peak against full's, its best step against Keras's LoRA; None without them.

    The best are chosen among the LoRA runs whose final loss is within tolerance of their
    plain run's: no option may buy speed or memory by training something else.
    """
    finished = measured_runs(runs, "step_time_s", "peak_memory_bytes")
    # Only a run that trains the same thing counts: its loss within its options' tolerance.
    lora = [run for run in finished if run["mode"] == "lora" and _trains_the_same(runs, run)]
    full = next((r for r in finished if r["mode"] == "full" and plain_run(runs, r) is r), None)
    peer = next(
        (r for r in finished if r["mode"] == "keras_lora" and plain_run(runs, r) is r), None
    )
    if not lora or (full is None and peer is None):
        return None
    float32 = [run for run in lora if not _lowers_precision(run)]
    lines = []
    if full is not None:
        memory = functools.partial(_memory_line, full=full, runs=runs)
        lines += _best_lines(lora, float32, "peak_memory_bytes", memory)
    if peer is not None:
        speed = functools.partial(_speed_line, peer=peer, runs=runs)
        lines += _best_lines(lora, float32, "step_time_s", speed)
    return "## Goals\n\n" + "\n".join(lines)


def _best_lines(lora, float32, field, line):
    """The best LoRA run's line by `field`; and the best float32 run's, when they differ in that.

    `line(run, kind)` writes a run's line; `kind` names the float32 line.
    """
    best = min(lora, key=lambda run: run[field])
    lines = [line(best, "")]
    if _lowers_precision(best) and float32:
        lines.append(line(min(float32, key=lambda run: run[field]), ", float32 throughout"))
    return lines


def _memory_line(best, kind, full, runs):
    ratio = best["peak_memory_bytes"] / full["peak_memory_bytes"]
    return (
        f"- memory{kind}: {run_label(best)} peaks at {format_bytes(best['peak_memory_bytes'])}, "
        f"{ratio:.3f}x full fine-tuning's {format_bytes(full['peak_memory_bytes'])} (goal <= "
        f"{MEMORY_GOAL:.2f}x: {'met' if ratio <= MEMORY_GOAL else 'not met'})"
        + _loss_words(best, plain_run(runs, best))
    )


def _speed_line(best, kind, peer, runs):
    ratio = best["step_time_s"] / peer["step_time_s"]
    return (
        f"- speed{kind}: {run_label(best)} steps in {format_seconds(best['step_time_s'])}, "
        f"{ratio:.3f}x Keras's built-in LoRA's {format_seconds(peer['step_time_s'])} (goal <= "
        f"{SPEED_GOAL:.2f}x: "
        f"{'met' if ratio <= SPEED_GOAL else 'not met'}); its first step took "
        f"{best['first_step_s']:.1f} s against {peer['first_step_s']:.1f} s"
        + _loss_words(best, plain_run(runs, best))
    )


def _lowers_precision(run):
    return any((run.get("options") or {}).get(name) for name in PRECISION_OPTIONS)


def _trains_the_same(runs, run):
    plain = plain_run(runs, run)
    if plain is run:
        return True
    check = loss_check(run, plain)
    return check is not None and check[0] <= check[1]


def _loss_words(run, plain):
    check = loss_check(run, plain) if plain is not run else None
    if check is None:
        return "."
    verdict = "within" if check[0] <= check[1] else "OUTSIDE"
    return (
        f"; final loss {check[0]:.1e} (relative) from the plain run's, {verdict} its tolerance "
        f"{check[1]:.0e}."
    )


def checkpoints_lines(run):
    """Where the measured peak went: the checkpoints, the estimate, the share none explains."""
    points = run.get("memory_checkpoints")
    if not points or not run.get("estimate"):
        return []
    peak = points["peak"]
    explained = points["after_imports"] + run["estimate"]["total"]
    retained = points["after_first_step"] - points["optimizer_built"]
    return [
        "- memory in use at fixed points (same source): "
        + ", ".join(
            f"{name.replace('_', ' ')} {format_bytes(value)}" for name, value in points.items()
        )
        + ".",
        f"- not explained by the runtime before the model plus the estimate's components: "
        f"{format_bytes(max(peak - explained, 0))}, {max(peak - explained, 0) / peak:.0%} of the "
        "peak.",
        f"- still held after the first step ended, when its activations and gradients are freed: "
        f"{format_bytes(retained)} more than before it. None of the estimate's tensors is alive "
        "then, so the framework holds it: likely the traced graph (with XLA, the compiled "
        "program), kernel caches and the allocator's free lists, not measured apart. It is the "
        "first part of the share above.",
    ]


def _cell(value):
    return "-" if value in (None, False) else ("on" if value is True else str(value))
