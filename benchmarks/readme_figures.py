"""Rewrites README's "Measured here" section from the results files in benchmarks/results/.

    python benchmarks/readme_figures.py

No figure in README is typed by hand: this script reads each results file and writes the
section between `<!-- figures:start -->` and `<!-- figures:end -->`.
"""

import json
import pathlib

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


def main():
    sections = [_compare_section(p.parent) for p in sorted(RESULTS.glob("*/results.json"))]
    readme = (ROOT / "README.md").read_text()
    head, rest = readme.split(START)
    _, tail = rest.split(END)
    body = "\n\n".join(sections) or "(no results yet)"
    atomic_write_text(ROOT / "README.md", f"{head}{START}\n{body}\n{END}{tail}")
    print(f"README.md: {len(sections)} result section(s)")


if __name__ == "__main__":
    main()
