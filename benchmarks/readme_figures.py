"""Rewrites README's "Measured here" section from the results files in benchmarks/results/.

    python benchmarks/readme_figures.py

No figure in README is typed by hand: this script reads each results file and writes the
section between `<!-- figures:start -->` and `<!-- figures:end -->`.
"""

import inspect
import json
import pathlib

from lora_keras.backends import BACKENDS
from lora_keras.cli import build_parser
from lora_keras.experiments import compare, sweep
from lora_keras.io_utils import atomic_write_text
from lora_keras.mixlora.settings import MIXLORA_DEFAULTS
from lora_keras.report.levers_markdown import goals_section
from lora_keras.report.markdown import SUMMARY_COLUMNS, summary_cells
from lora_keras.report.quality import quality_section
from lora_keras.report.results import run_label
from lora_keras.units import format_bytes

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
START, END = "<!-- figures:start -->", "<!-- figures:end -->"
COLUMNS = (
    "run",
    "trainable weights",
    "step time (median)",
    "vs full",
    "tokens/s",
    "stored weights",
    "peak memory",
    "estimated memory",
    "final loss",
)


def _command(config, relative):
    """The command that made a results folder, from its config: what differs from the defaults.

    A setting the command line has no flag for (`mixlora=` of `lk.compare`) follows in words.
    """
    if config.get("kind") in ("levers", "learn_forget"):
        return f"python benchmarks/{config['kind']}.py --out {relative}`"
    kind = config.get("kind", "compare")
    runner = compare if kind == "compare" else sweep
    subcommand = build_parser()._subparsers._group_actions[0].choices[kind]
    known = {option for action in subcommand._actions for option in action.option_strings}
    flags, python_only = [], []
    for name, parameter in inspect.signature(runner).parameters.items():
        value, default = config.get(name, parameter.default), parameter.default
        if name == "mixlora" and value == MIXLORA_DEFAULTS:
            continue  # compare records the defaults it filled in
        if isinstance(value, list | tuple):
            value, default = ",".join(map(str, value)), ",".join(map(str, default or ()))
        if name in ("out", "verbose", "sample_prompts") or value == default:
            continue
        flag = "--" + name.replace("_", "-").removesuffix("-s")
        if flag not in known:
            python_only.append(f"{name}={value!r}")
        else:
            flags.append(flag if value is True else f"{flag} {value}")
    command = " ".join(["lora-keras", kind, *flags, "--out", str(relative)])
    return command + (f"` (Python: `{', '.join(python_only)}`)" if python_only else "`")


def _vs_lora(runs):
    """`run: step and peak against LoRA's` for each other finished run, where a LoRA run exists."""
    finished = [run for run in runs if run["status"] == "ok"]
    lora = next((run for run in finished if run_label(run).startswith("lora r=")), None)
    if lora is None:
        return []
    return [
        f"{run_label(run)}: step {run['step_time_s'] / lora['step_time_s']:.2f}x, peak "
        f"{run['peak_memory_bytes'] / lora['peak_memory_bytes']:.2f}x"
        for run in finished
        if run is not lora and run["mode"] != "full"
    ]


def _compare_section(folder, level="###"):
    results = json.loads((folder / "results.json").read_text())
    env, config = results["environment"], results["config"]
    finished = [run for run in results["runs"] if run["status"] == "ok"]
    # A column every run leaves empty (stored weights before QLoRA existed) says nothing; the
    # status only where a run did not finish.
    shown = COLUMNS if len(finished) == len(results["runs"]) else ("run", "status", *COLUMNS[1:])
    columns = [
        column
        for column in shown
        if any(
            cells[SUMMARY_COLUMNS.index(column)] != "n/a"
            for cells in summary_cells(results["runs"])
        )
    ]
    keep = [SUMMARY_COLUMNS.index(column) for column in columns]
    rows = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    rows += [
        "| " + " | ".join(cells[i] for i in keep) + " |" for cells in summary_cells(results["runs"])
    ]
    runtime = [run["runtime_memory_bytes"] for run in finished if run.get("runtime_memory_bytes")]
    relative = folder.relative_to(ROOT)
    source = finished[0]["memory_source"] if finished else "n/a"
    floor = (
        f" Before any model existed the process held {format_bytes(max(runtime))}."
        if runtime
        else ""
    )
    vs_lora = _vs_lora(results["runs"])
    goals = goals_section(results["runs"])
    quality = quality_section(results)
    if quality:  # its heading, a level below this section's
        quality = quality.replace("## ", f"{level}# ", 1)
        if (folder / "learn_forget.png").exists():
            quality += f"\n\n![learned against forgot]({relative}/learn_forget.png)"
    return "\n".join(
        [
            f"{level} `{_command(config, relative)} ({results['created']})",
            "",
            f"{env.get('device')}, {env.get('backend')} {env.get('backend_version')}, "
            f"keras {env.get('keras_version')}; {env.get('weights_source')}; "
            f"{env.get('data_source')}; batch {config['batch_size']} x "
            f"{config['sequence_length']} tokens, {config['steps']} steps a run, AdamW. "
            f"Peak memory: {source}.{floor}",
            "",
            *rows,
            "",
            *([f"Against LoRA in the same run: {'; '.join(vs_lora)}.", ""] if vs_lora else []),
            *([goals.replace("## Goals\n", "Goals:"), ""] if goals else []),
            *([quality, ""] if quality else []),
            f"Full report with plots: [{relative}/report.md]({relative}/report.md).",
        ]
    )


# Settings that differ between the runs of one side-by-side table; every other one must match.
_PER_BACKEND = ("backend", "out")


def _backends_section(folders):
    """One table of the same comparison measured under each backend, from their results files."""
    results = [json.loads((folder / "results.json").read_text()) for folder in folders]
    # TensorFlow (the default) first, then the others in the order `--backend` lists them.
    order = sorted(
        range(len(folders)),
        key=lambda i: list(BACKENDS).index(results[i]["config"].get("backend", "tensorflow")),
    )
    folders, results = [folders[i] for i in order], [results[i] for i in order]
    backends = [result["environment"].get("backend", "n/a") for result in results]
    per_run = {}
    for backend, result in zip(backends, results, strict=True):
        for cells in summary_cells(result["runs"]):
            per_run.setdefault(cells[0], {})[backend] = dict(
                zip(SUMMARY_COLUMNS, cells, strict=True)
            )
    header = ["run", "trainable weights"]
    header += [f"{backend}: step time, vs full, peak memory" for backend in backends]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for run, by_backend in per_run.items():
        counts = sorted({cells["trainable weights"] for cells in by_backend.values()})
        measured = [
            ", ".join(by_backend[b][c] for c in ("step time (median)", "vs full", "peak memory"))
            if b in by_backend
            else "n/a"
            for b in backends
        ]
        # One count when every backend trained the same weights, as they should.
        rows.append("| " + " | ".join([run, " / ".join(counts), *measured]) + " |")
    env = results[0]["environment"]
    links = ", ".join(
        f"[{backend}]({folder.relative_to(ROOT)}/report.md)"
        for backend, folder in zip(backends, folders, strict=True)
    )
    commands = "; ".join(
        f"`{_command(result['config'], folder.relative_to(ROOT))}"
        for result, folder in zip(results, folders, strict=True)
    )
    return "\n".join(
        [
            f"### The same comparison under each Keras backend ({', '.join(backends)})",
            "",
            f"{commands}. {env.get('device')}; each backend's step times are its own, measured "
            "in its own processes, so compare the ratios down a column rather than times "
            f"across columns on a shared machine. Reports: {links}.",
            "",
            *rows,
        ]
    )


def _same_comparison(folders):
    """Groups compare folders whose settings differ only by backend."""
    groups = {}
    for folder in folders:
        config = json.loads((folder / "results.json").read_text())["config"]
        if config.get("kind") != "compare":
            continue
        key = json.dumps({k: v for k, v in config.items() if k not in _PER_BACKEND}, sort_keys=True)
        groups.setdefault(key, []).append(folder)
    return [group for group in groups.values() if len(group) > 1]


def _results(folder):
    return json.loads((folder / "results.json").read_text())


def _device(folder):
    return _results(folder)["environment"].get("device", "")


def _in_progress(folder):
    """A comparison still running (or stopped mid-way) has runs not yet started or running."""
    return any(run["status"] in ("running", "not started") for run in _results(folder)["runs"])


def main():
    folders = [path.parent for path in sorted(RESULTS.glob("*/results.json"))]
    for folder in [folder for folder in folders if _in_progress(folder)]:
        print(f"{folder.relative_to(ROOT)}: left out, its runs have not all ended")
        folders.remove(folder)
    groups = _same_comparison(folders)
    # A comparison measured under several backends: the first folder's full section, then the
    # side-by-side table, which links every backend's report.
    grouped_later = {folder for group in groups for folder in group[1:]}
    sections, devices = [], set()
    # The CPU's sections first; then each GPU's in the order they were measured, under a
    # heading of their own.
    on_gpu = sorted(
        (folder for folder in folders if _device(folder).startswith("GPU")),
        key=lambda folder: _results(folder)["created"],
    )
    for folder in [folder for folder in folders if folder not in on_gpu] + on_gpu:
        if folder in grouped_later:
            continue
        device = _device(folder)
        if folder in on_gpu and device not in devices:
            sections.append(f"### On one GPU: {device.removeprefix('GPU: ')}")
        devices.add(device)
        sections.append(_compare_section(folder, "####" if folder in on_gpu else "###"))
        sections += [_backends_section(group) for group in groups if group[0] == folder]
    readme = (ROOT / "README.md").read_text()
    head, rest = readme.split(START)
    _, tail = rest.split(END)
    body = "\n\n".join(sections) or "(no results yet)"
    atomic_write_text(ROOT / "README.md", f"{head}{START}\n{body}\n{END}{tail}")
    print(f"README.md: {len(sections)} result section(s)")


if __name__ == "__main__":
    main()
