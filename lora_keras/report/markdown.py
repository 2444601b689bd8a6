"""The report's Markdown, every number in it read from `results.json`."""

from lora_keras.measure.estimate_text import explain_estimate
from lora_keras.report.expert_loads import mixlora_section
from lora_keras.report.levers_markdown import checkpoints_lines, goals_section, levers_section
from lora_keras.report.quality import quality_section
from lora_keras.report.results import full_run, measured_runs, run_label, unfinished_runs
from lora_keras.report.together import together_section
from lora_keras.units import format_bytes, format_seconds, format_share

MISSING = "n/a"
SUMMARY_COLUMNS = (
    "run",
    "status",
    "trainable weights",
    "% of total",
    "first step",
    "step time (median)",
    "vs full",
    "tokens/s",
    "stored weights",
    "peak memory",
    "memory source",
    "estimated memory",
    "final loss",
)


def render_markdown(results, plots, not_drawn=()):
    """Return `report.md` for `results`, embedding `plots`, a list of `(filename, title)`.

    `not_drawn` lists `(filename, reason)` of plots that could not be written (a full disk).
    """
    sections = (
        _title(results),
        _measured_on(results),
        _incomplete(results),
        _table("Environment", results["environment"]),
        _table("Configuration", results["config"]),
        _summary(results["runs"]),
        quality_section(results),
        together_section(results),
        levers_section(results["runs"]),
        goals_section(results["runs"]),
        _plots(plots),
        _not_drawn(not_drawn),
        mixlora_section(results["runs"]),
        _failures(results["runs"]),
        _where_the_memory_goes(results["runs"]),
        _samples(results["runs"]),
    )
    return "\n\n".join(section for section in sections if section) + "\n"


def _title(results):
    config = results["config"]
    preset = config.get("preset", "GPT-2")
    if config.get("kind") == "sweep":
        heading = f"# LoRA rank sweep on {preset}: trainable weights, memory, time and loss"
    elif results["runs"]:
        modes = " vs ".join(dict.fromkeys(run["mode"] for run in results["runs"]))
        heading = f"# {modes} on {preset}: step time and peak memory"
    else:
        heading = f"# No runs on {preset}: results.json lists none"
    return (
        f"{heading}\n\nCreated {results.get('created', MISSING)}. Every figure below is drawn "
        "from `results.json` in this folder by `lora_keras.report.write_report`."
    )


# The instruction sets a reader needs to tell whether the figures apply to their CPU: what
# changes a precision lever's effect (`lora_keras.host.CPU_FEATURES`).
_SAID_FEATURES = {
    "avx2": "AVX2",
    "fma": "FMA",
    "avx512f": "AVX-512",
    "avx512_bf16": "AVX512_BF16",
    "avx512_fp16": "AVX512_FP16",
    "amx_bf16": "AMX-BF16",
    "amx_fp16": "AMX-FP16",
    "sve": "SVE",
    "bf16": "BF16",
}
_ALWAYS_SAID = ("avx512f", "avx512_bf16", "amx_bf16")


def _measured_on(results):
    """One line naming the device, the CPU model and its instruction sets, and any warning."""
    environment = results["environment"]
    device = environment.get("device")
    model = environment.get("cpu_model")
    features = environment.get("cpu_features")
    if not isinstance(model, str):
        where = f"{device}; " if isinstance(device, str) else ""
        return f"Measured on: {where}the CPU's model and instruction sets were not recorded."
    cores = environment.get("cpu_count")
    cpu = f"CPU {model}" + (f", {cores} cores" if isinstance(cores, int) else "")
    if isinstance(features, list) and all(isinstance(name, str) for name in features):
        has = [said for name, said in _SAID_FEATURES.items() if name in features]
        lacks = [_SAID_FEATURES[name] for name in _ALWAYS_SAID if name not in features]
        if not any(name in features for name in ("avx2", "avx512f")):
            lacks = []  # not an x86 CPU: AVX-512 and AMX mean nothing there
        listed = ", ".join(has + [f"no {name}" for name in lacks])
        cpu += f" ({listed or 'none of the instruction sets the levers depend on'})"
    else:
        cpu += " (its instruction sets could not be read)"
    on_gpu = isinstance(device, str) and not device.startswith("CPU")
    line = f"Measured on: {device}, beside {cpu}" if on_gpu else f"Measured on: {cpu}"
    capability = environment.get("gpu_compute_capability")
    if isinstance(capability, str):
        line += f", GPU compute capability {capability}"
    lines = [line + "."]
    warnings = results.get("warnings")
    if isinstance(warnings, list):
        lines += [f"**{warning}**" for warning in warnings if isinstance(warning, str)]
    return "\n\n".join(lines)


def _incomplete(results):
    unfinished = unfinished_runs(results)
    if not unfinished:
        return None
    interrupted = results.get("interrupted")
    why = (
        f"was interrupted by {interrupted['signal']} at {interrupted['at']}"
        if isinstance(interrupted, dict)
        else "has runs that did not finish: it is still running, or its process ended "
        "without saying why"
    )
    runs = ", ".join(f"{label} ({status})" for label, status in unfinished)
    return (
        f"**Incomplete: this comparison {why}.** Missing results: {runs}. Every figure below "
        "is drawn from the runs that finished."
    )


def _not_drawn(not_drawn):
    if not not_drawn:
        return None
    lines = [f"- {filename}: {reason}" for filename, reason in not_drawn]
    return "## Plots not drawn\n\n" + "\n".join(lines)


def _table(heading, mapping):
    rows = "\n".join(f"| {key} | {_cell(value)} |" for key, value in mapping.items())
    return f"## {heading}\n\n| | |\n|---|---|\n{rows}"


def summary_cells(runs):
    """One tuple of cell texts a run, in the order of `SUMMARY_COLUMNS`."""
    full = full_run(runs)
    return [
        tuple(
            _cell(cell)
            for cell in (
                run_label(run),
                run["status"],
                _optional(run.get("trainable_params"), "{:,}"),
                _share(run.get("trainable_params"), run.get("total_params")),
                _optional(run.get("first_step_s"), format_seconds),
                _optional(run.get("step_time_s"), format_seconds),
                _ratio(run, full),
                _optional(run.get("tokens_per_s"), "{:,.0f}"),
                _optional(run.get("stored_weight_bytes"), format_bytes),
                _optional(run.get("peak_memory_bytes"), format_bytes),
                run.get("memory_source") or MISSING,
                _optional(run.get("estimated_memory_bytes"), format_bytes),
                _optional((run.get("loss") or [None])[-1], "{:.4f}"),
            )
        )
        for run in runs
    ]


def _summary(runs):
    if not runs:
        return "## Summary\n\nNo runs were recorded: there is nothing to compare."
    rows = ["| " + " | ".join(SUMMARY_COLUMNS) + " |", "|" + "---|" * len(SUMMARY_COLUMNS)]
    rows += ["| " + " | ".join(cells) + " |" for cells in summary_cells(runs)]
    note = (
        "Step time: the median of the steps after the first, which traces and compiles and is "
        "shown apart. Stored weights: what the model's variables take in their own dtypes "
        "(NF4 kernels at their packed size). Peak memory: as its source says; the estimate is "
        "explained below."
    )
    return "## Summary\n\n" + "\n".join(rows) + "\n\n" + note


def _plots(plots):
    if not plots:
        return None
    return "## Plots\n\n" + "\n\n".join(f"![{title}]({filename})" for filename, title in plots)


def _failures(runs):
    # Every unfinished run is listed at the top, as missing; an interrupted one is also listed
    # here, with what stopped it and when. Runs that never started have nothing to say here.
    failed = [run for run in runs if run["status"] not in ("ok", "not started", "running")]
    if not failed:
        return None
    entries = [
        f"### {run_label(run)}: {run['status']}\n\n```text\n{run.get('error') or MISSING}\n```"
        for run in failed
    ]
    return "## Failed runs\n\n" + "\n\n".join(entries)


def _where_the_memory_goes(runs):
    runs = measured_runs(runs, "estimate")
    if not runs:
        return None
    full = full_run(runs)
    entries = []
    for run in runs:
        lines = [f"### {run_label(run)}", ""]
        lines += [f"- {sentence}" for sentence in explain_estimate(run["estimate"])]
        if run.get("runtime_memory_bytes"):
            floor = run["runtime_memory_bytes"] + run["estimate"]["total"]
            lines.append(
                f"- runtime before the model was built (measured, same source): "
                f"{format_bytes(run['runtime_memory_bytes'])}; with the estimate: "
                f"{format_bytes(floor)}."
            )
        if run.get("peak_memory_bytes"):
            lines.append(
                f"- measured peak: {format_bytes(run['peak_memory_bytes'])} "
                f"({run['peak_memory_bytes'] / run['estimate']['total']:.2f}x the estimate), "
                f"from {run.get('memory_source') or 'an unnamed source'}."
            )
        lines += checkpoints_lines(run)
        if full is not None and run is not full:
            lines.append(_against_full(run["estimate"], full["estimate"]))
        entries.append("\n".join(lines))
    intro = (
        "An estimate from first principles (`lora_keras.measure.estimate`) next to each "
        "measured peak: weights, gradients and optimizer state follow from the weight counts, "
        "activations from the batch and sequence length."
    )
    return "## Where the memory goes\n\n" + intro + "\n\n" + "\n\n".join(entries)


def _against_full(estimate, full_estimate):
    def state(values):
        return values["gradients"] + values["optimizer_state"]

    return (
        f"- against full fine-tuning: gradients and optimizer state "
        f"{format_bytes(state(full_estimate))} -> {format_bytes(state(estimate))}; activations "
        f"{format_bytes(full_estimate['activations'])} -> {format_bytes(estimate['activations'])}."
    )


def _samples(runs):
    runs = [run for run in runs if run.get("samples")]
    if not runs:
        return None
    entries = []
    for run in runs:
        for sample in run["samples"]:
            entries.append(
                f"### {run_label(run)} ({_optional(sample.get('seconds'), format_seconds)})\n\n"
                f"Prompt: `{sample['prompt']}`\n\n```text\n{sample['text']}\n```"
            )
    return "## Generated samples\n\n" + "\n\n".join(entries)


def _optional(value, format_value):
    if value is None:
        return MISSING
    return format_value.format(value) if isinstance(format_value, str) else format_value(value)


def _share(part, whole):
    if part is None or not whole:
        return MISSING
    return format_share(part, whole)


def _ratio(run, full):
    if full is None or run.get("step_time_s") is None:
        return MISSING
    return f"{run['step_time_s'] / full['step_time_s']:.2f}x"


def _cell(value):
    if isinstance(value, (list, tuple)):
        value = ", ".join(str(item) for item in value)
    elif value is None:
        value = MISSING
    # A pipe would end the cell and a newline the row.
    return str(value).replace("|", "\\|").replace("\n", " ")
