"""Rewrites README's "Measured here" section from the results files in benchmarks/results/.

    python benchmarks/readme_figures.py

No figure in README is typed by hand: this script reads each results file and writes the
section between `<!-- figures:start -->` and `<!-- figures:end -->`.
"""

import json
import pathlib

from lora_keras.backends import BACKENDS
from lora_keras.io_utils import atomic_write_text
from lora_keras.measure.units import format_bytes
from lora_keras.report.markdown import SUMMARY_COLUMNS, summary_cells

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
START, END = "<!-- figures:start -->", "<!-- figures:end -->"
COLUMNS = (
    "run",
    "trainable weights",
    "step time (median)",
    "vs full",
    "tokens/s",
    "peak memory",
    "estimated memory",
    "final loss",
)


def _compare_section(folder):
    results = json.loads((folder / "results.json").read_text())
    env, config = results["environment"], results["config"]
    finished = [run for run in results["runs"] if run["status"] == "ok"]
    keep = [SUMMARY_COLUMNS.index(column) for column in COLUMNS]
    rows = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
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
    return "\n".join(
        [
            f"### `lora-keras compare --out {relative}` ({results['created']})",
            "",
            f"{env.get('device')}, {env.get('backend')} {env.get('backend_version')}, "
            f"keras {env.get('keras_version')}; {env.get('weights_source')}; "
            f"{env.get('data_source')}; batch {config['batch_size']} x "
            f"{config['sequence_length']} tokens, {config['steps']} steps a mode, AdamW. "
            f"Peak memory: {source}.{floor}",
            "",
            *rows,
            "",
            f"Full report with plots: [{relative}/report.md]({relative}/report.md).",
            "",
            f"![peak memory]({relative}/memory.png)",
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
        f"`lora-keras compare --backend {backend} --out {folder.relative_to(ROOT)}`"
        for backend, folder in zip(backends, folders, strict=True)
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


def main():
    folders = [path.parent for path in sorted(RESULTS.glob("*/results.json"))]
    sections = [_compare_section(folder) for folder in folders]
    sections += [_backends_section(group) for group in _same_comparison(folders)]
    readme = (ROOT / "README.md").read_text()
    head, rest = readme.split(START)
    _, tail = rest.split(END)
    body = "\n\n".join(sections) or "(no results yet)"
    atomic_write_text(ROOT / "README.md", f"{head}{START}\n{body}\n{END}{tail}")
    print(f"README.md: {len(sections)} result section(s)")


if __name__ == "__main__":
    main()
