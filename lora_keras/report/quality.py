"""What the savings cost in quality: held-out loss before and after each run, learn against forget.

Every run of a comparison evaluates its held-out loss before its first step and after its last
(`run["eval"]`): on the data it fine-tunes on ("target": how much it learned) and, where there
is one, on data it should not forget ("keep": how much it forgot). A method that learns less
than full fine-tuning but forgets less too is the trade-off Biderman et al. (2024) measured for
LoRA ("LoRA learns less and forgets less").
"""

import math

import numpy as np
from matplotlib.figure import Figure

from lora_keras.report.results import full_run, measured_runs, run_label
from lora_keras.units import format_bytes, format_seconds

EVAL_SETS = ("target", "keep")


def gain(run, data_set):
    """Held-out loss before minus after on `data_set` (positive: the loss fell), or None."""
    losses = (run.get("eval") or {}).get(data_set)
    return None if losses is None else losses["before"] - losses["after"]


def _quality_runs(runs):
    return [run for run in measured_runs(runs, "eval") if "target" in run["eval"]]


def _full_with_eval(runs):
    full = full_run(runs)
    return full if full is not None and "target" in (full.get("eval") or {}) else None


def quality_section(results):
    """The report's held-out section: each run's losses, and its learning and forgetting
    measured against full fine-tuning's; None without evaluated runs."""
    runs = _quality_runs(results["runs"])
    if not runs:
        return None
    lines = ["## What it learned and what it forgot (held-out loss)", ""]
    if results["config"].get("weights") == "random":
        lines += [
            "**These models have random weights: their held-out losses say nothing about "
            "quality.** A random model has nothing to forget, and what it learns in a few steps "
            "is mostly the corpus's word frequencies. Use `--preset gpt2_mini` (pretrained in "
            "the package, offline) or `--weights pretrained` to measure the trade-off.",
            "",
        ]
    keep = any("keep" in run["eval"] for run in runs)
    lines += [
        "Held-out documents, never trained on, evaluated before the first step and after the "
        "last (mean cross-entropy a target token; perplexity is its exponential). "
        '"target" is the data each run fine-tunes on; '
        + (
            '"keep" is what the model knew before and should not forget.'
            if keep
            else "no keep data set was given."
        ),
        "",
        "| run | target before | target after | gain | of full's gain | "
        + ("keep before | keep after | forgot | full forgot | " if keep else "")
        + "trainable weights | step time | peak memory | eval time |",
        "|---" * (9 + 4 * keep) + "|",
    ]
    full = _full_with_eval(runs)
    for run in runs:
        target = run["eval"]["target"]
        cells = [
            run_label(run),
            _loss(target["before"]),
            _loss(target["after"]),
            f"{gain(run, 'target'):+.4f}",
            _fraction(gain(run, "target"), gain(full, "target") if full else None),
        ]
        if keep:
            own = run["eval"].get("keep")
            cells += [
                _loss(own["before"]) if own else "n/a",
                _loss(own["after"]) if own else "n/a",
                f"{-gain(run, 'keep'):+.4f}" if own else "n/a",
                f"{-gain(full, 'keep'):+.4f}" if full and "keep" in full["eval"] else "n/a",
            ]
        cells += [
            f"{run['trainable_params']:,}" if run.get("trainable_params") is not None else "n/a",
            format_seconds(run["step_time_s"]) if run.get("step_time_s") is not None else "n/a",
            format_bytes(run["peak_memory_bytes"])
            if run.get("peak_memory_bytes") is not None
            else "n/a",
            format_seconds(run["eval_time_s"]) if run.get("eval_time_s") is not None else "n/a",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    tokens = {
        name: runs[0]["eval"][name]["tokens"] for name in EVAL_SETS if name in runs[0]["eval"]
    }
    lines += [
        "",
        "Held-out tokens: "
        + ", ".join(f"{name} {count:,}" for name, count in tokens.items())
        + '. "gain" is the loss before minus after (higher: learned more); "forgot" is the '
        "keep loss after minus before (higher: forgot more). Evaluation time is not in the step "
        "times.",
    ]
    return "\n".join(lines)


def _loss(value):
    return f"{value:.4f} (ppl {math.exp(min(value, 50.0)):,.1f})"


def _fraction(part, whole):
    if part is None or not whole:
        return "n/a"
    return f"{part / whole:.0%}"


def learn_forget_figure(results, title):
    """Target gain against keep-loss increase, one labelled point a run; None without both."""
    runs = [run for run in _quality_runs(results["runs"]) if "keep" in run["eval"]]
    if not runs:
        return None
    figure = Figure(figsize=(8.0, 6.0), layout="constrained")
    axes = figure.subplots()
    forgot = np.array([-gain(run, "keep") for run in runs])
    learned = np.array([gain(run, "target") for run in runs])
    axes.scatter(forgot, learned, s=40)
    for run, x, y in zip(runs, forgot, learned, strict=True):
        details = [run_label(run)]
        if run.get("trainable_params") is not None:
            details.append(f"{run['trainable_params']:,} trained")
        if run.get("step_time_s") is not None and run.get("peak_memory_bytes") is not None:
            step, peak = run["step_time_s"], run["peak_memory_bytes"]
            details.append(f"{format_seconds(step)}/step, {format_bytes(peak)}")
        axes.annotate("\n".join(details), (x, y), textcoords="offset points", xytext=(6, 4),
                      fontsize="small")  # fmt: skip
    axes.axvline(0.0, color="grey", linewidth=0.8)
    axes.set_xlabel("forgot: keep-domain held-out loss after minus before (nats a token)")
    axes.set_ylabel("learned: target-domain held-out loss before minus after (nats a token)")
    if results["config"].get("weights") == "random":
        title += " (random weights: says nothing about quality)"
    axes.set_title(title)
    axes.margins(0.25)
    return figure
