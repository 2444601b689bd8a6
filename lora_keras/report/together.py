"""A sweep trained together in the report: K adapters on one frozen model against K runs.

The run with `adapters` (`lk.sweep(..., together=True)`) trained every rank at once; the runs of
the same ranks alone trained one after another. `together_comparison` reads both from
`results.json`; the section and the plot draw only what it gives.
"""

import numpy as np
from matplotlib.figure import Figure

from lora_keras.report.results import measured_runs, run_label
from lora_keras.units import byte_unit, format_bytes, format_seconds


def together_comparison(results):
    """The together run, its adapters' own runs, and the sums that compare them; None if none.

    Returns:
        A dict: `together` (the run), `pairs` (`[(adapter, its own run or None)]`), `alone` (the
        own runs found), and the totals over `alone`: `wall_time_s`, `train_time_s`,
        `tokens_per_s` (every run's tokens over every run's median steps: one after another),
        `peak_sum` and `peak_max`.
    """
    together = next(iter(measured_runs(results["runs"], "adapters")), None)
    if together is None:
        return None
    own = {
        run["rank"]: run
        for run in measured_runs(results["runs"], "rank")
        if run["mode"] == together["mode"] and not run.get("adapters")
    }
    pairs = [(adapter, own.get(adapter["rank"])) for adapter in together["adapters"]]
    alone = [run for _, run in pairs if run is not None]

    def total(field):
        values = [run.get(field) for run in alone]
        return sum(values) if alone and None not in values else None

    steps = [(run.get("tokens_per_s"), run.get("step_time_s")) for run in alone]
    tokens_per_s = None
    if alone and all(rate and step for rate, step in steps):
        tokens_per_s = sum(rate * step for rate, step in steps) / sum(step for _, step in steps)
    peaks = [run.get("peak_memory_bytes") for run in alone]
    return {
        "together": together,
        "pairs": pairs,
        "alone": alone,
        "wall_time_s": total("wall_time_s"),
        "train_time_s": total("train_time_s"),
        "tokens_per_s": tokens_per_s,
        "peak_sum": total("peak_memory_bytes"),
        "peak_max": max(peaks) if alone and None not in peaks else None,
    }


def relative_difference(value, reference):
    """`|value - reference| / |reference|`, or None where either is missing."""
    if value is None or reference is None or reference == 0:
        return None
    return abs(value - reference) / abs(reference)


def _listed(values):
    return ", ".join(map(str, values)) if isinstance(values, list) else str(values)


def _final(losses):
    return losses[-1] if losses else None


def _after(holder):
    return ((holder.get("eval") or {}).get("target") or {}).get("after")


def _row(name, together, alone, format_value, alone_label=""):
    ratio = "n/a" if together is None or not alone else f"{together / alone:.2f}x"
    cells = [_formatted(together, format_value), _formatted(alone, format_value) + alone_label]
    return f"| {name} | {' | '.join(cells)} | {ratio} |"


def _formatted(value, format_value):
    if value is None:
        return "n/a"
    return format_value.format(value) if isinstance(format_value, str) else format_value(value)


def together_section(results):
    """The report's "Trained together" section; None without a together run that finished."""
    comparison = together_comparison(results)
    if comparison is None:
        return None
    together, pairs, alone = comparison["together"], comparison["pairs"], comparison["alone"]
    ranks = ", ".join(str(adapter["rank"]) for adapter, _ in pairs)
    lines = [
        "## Trained together",
        "",
        f"{len(pairs)} LoRA adapters (ranks {ranks}) trained at once on one frozen model in "
        f"one process ({run_label(together)}), against the same ranks trained one after "
        f"another, each in its own process ({len(alone)} of them finished). Each adapter saw "
        "the batches its own run saw, in a batch holding every adapter's "
        f"({together.get('sequences_per_adapter', 'n/a')} sequences each a step).",
    ]
    matched = together.get("matched")
    if isinstance(matched, dict):
        lines += [
            "",
            f"So that each adapter takes its own run's steps, every run trained with dropout "
            f"{matched.get('dropout')} (the preset's: {_listed(matched.get('preset_dropout'))}), "
            f"gradient clipping {matched.get('global_clipnorm') or 'off'}, and each A "
            f"{matched.get('a_init')}.",
        ]
    lines += [
        "",
        "| | together (1 process) | one after another | together / one after another |",
        "|---|---|---|---|",
        _row(
            "wall time (each process, start to end)",
            together.get("wall_time_s"),
            comparison["wall_time_s"],
            format_seconds,
        ),
        _row(
            "training time (every step)",
            together.get("train_time_s"),
            comparison["train_time_s"],
            format_seconds,
        ),
        _row(
            "tokens/s summed over adapters (median step)",
            together.get("tokens_per_s"),
            comparison["tokens_per_s"],
            "{:,.0f}",
        ),
        _row(
            "peak memory",
            together.get("peak_memory_bytes"),
            comparison["peak_sum"],
            format_bytes,
            " (sum: the runs side by side)",
        ),
        _row(
            "peak memory against the largest run",
            together.get("peak_memory_bytes"),
            comparison["peak_max"],
            format_bytes,
            " (largest)",
        ),
        "",
        "| adapter | rank | final loss, together | its own run | relative difference | "
        "held-out after, together | its own run | relative difference |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for adapter, run in pairs:
        own = run or {}
        final, own_final = _final(adapter.get("loss")), _final(own.get("loss"))
        after, own_after = _after(adapter), _after(own)
        cells = [
            adapter.get("name"),
            adapter.get("rank"),
            _formatted(final, "{:.6f}"),
            _formatted(own_final, "{:.6f}"),
            _formatted(relative_difference(final, own_final), "{:.1e}"),
            _formatted(after, "{:.6f}"),
            _formatted(own_after, "{:.6f}"),
            _formatted(relative_difference(after, own_after), "{:.1e}"),
        ]
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    lines += [
        "",
        "Final loss: the last training step's. Peak memory: "
        f"{together.get('memory_source') or 'as each run measured it'}; the sum of the separate "
        "peaks is what the runs would hold side by side on one device. The together run's "
        "trainable weights count each adapter at the largest rank (its padding, zero, never "
        "trains).",
    ]
    return "\n".join(lines)


def together_figure(results, title):
    """Peak memory, tokens per second and each adapter's loss, together against alone."""
    comparison = together_comparison(results)
    if comparison is None or not comparison["alone"]:
        return None
    together = comparison["together"]
    figure = Figure(figsize=(15, 4.8), layout="constrained")
    memory, speed, losses = figure.subplots(1, 3)
    peaks = [together.get("peak_memory_bytes"), comparison["peak_max"], comparison["peak_sum"]]
    peaks = [value or 0 for value in peaks]
    unit, size = byte_unit(max(peaks))
    labels = ["together", "largest run alone", "sum of runs alone"]
    memory.bar(labels, np.array(peaks, dtype=float) / size, color=["C0", "C1", "C1"])
    memory.set_ylabel(f"peak memory ({unit})")
    memory.set_title("Peak memory")
    rates = [together.get("tokens_per_s") or 0, comparison["tokens_per_s"] or 0]
    speed.bar(["together", "one after another"], rates, color=["C0", "C1"])
    speed.set_ylabel("tokens/s, summed over adapters")
    speed.set_title("Throughput (median step)")
    for index, (adapter, run) in enumerate(comparison["pairs"]):
        color = f"C{index}"
        if run is not None and run.get("loss"):
            steps = np.arange(1, len(run["loss"]) + 1)
            losses.plot(steps, run["loss"], color=color, label=f"rank {adapter['rank']} alone")
        if adapter.get("loss"):
            steps = np.arange(1, len(adapter["loss"]) + 1)
            losses.plot(
                steps,
                adapter["loss"],
                color=color,
                linestyle="none",
                marker="x",
                label=f"rank {adapter['rank']} together",
            )
    losses.xaxis.get_major_locator().set_params(integer=True)
    losses.set_xlabel("training step")
    losses.set_ylabel("training loss")
    losses.set_title("Each adapter's loss")
    losses.legend(fontsize="small")
    figure.suptitle(title)
    return figure
