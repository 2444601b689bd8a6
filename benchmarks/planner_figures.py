"""Peak memory against model size and against sequence length: the planner's lines, measured
points, for full fine-tuning, LoRA and QLoRA (TensorFlow on this CPU, runtime included).

    python benchmarks/planner_figures.py    # writes benchmarks/results/planner-memory.png

Drawn only from committed results: the out-of-sample checks (planner-check-*, batch 2) and the
calibration's base-model comparisons (batch 4, hollow markers, dotted lines).
"""

import glob
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from lora_keras.planner.counting import count_params  # noqa: E402
from lora_keras.planner.predict import architecture, predict_peak  # noqa: E402

RESULTS = os.path.join(os.path.dirname(__file__), "results")
OUT = os.path.join(RESULTS, "planner-memory.png")
PRESETS = ("gpt2_base_en", "gpt2_medium_en", "gpt2_large_en")
LENGTHS = (128, 256, 512, 1024)
COLORS = {"full": "tab:red", "lora": "tab:blue", "qlora": "tab:green"}
GIB = 2**30
PLAIN = {"jit_compile": False, "mixed_precision": None, "remat": False, "chunked_loss": False}


def measured(batch_size):
    """`{(preset, mode, sequence length): peak}` of plain TensorFlow CPU runs at this batch."""
    points = {}
    for path in glob.glob(os.path.join(RESULTS, "*", "results.json")):
        with open(path) as file:
            results = json.load(file)
        config = results["config"]
        if config["batch_size"] != batch_size or results["environment"]["backend"] != "tensorflow":
            continue
        if results["environment"]["device"].startswith("GPU"):
            continue
        for run in results["runs"]:
            options = {k: v for k, v in run.get("options", {}).items() if k in PLAIN}
            if run.get("status") != "ok" or options != {k: PLAIN[k] for k in options}:
                continue
            if any(run["options"].get(k) for k in ("frozen_dtype",)):
                continue
            key = (config["preset"], run["mode"], config["sequence_length"])
            points.setdefault(key, []).append(run["peak_memory_bytes"])
    return {key: min(values) for key, values in points.items()}


def predicted(preset, mode, batch, length):
    return predict_peak(preset, mode, batch, length)[0]["total"] / GIB


def main():
    figure, (by_size, by_length) = plt.subplots(1, 2, figsize=(12, 4.8))
    sizes = {p: count_params(architecture(p), "full")["total"] / 1e6 for p in PRESETS}
    for batch, style, fill in ((2, "-", True), (4, ":", False)):
        points = measured(batch)
        for mode, color in COLORS.items():
            xs = [sizes[p] for p in PRESETS]
            by_size.plot(
                xs,
                [predicted(p, mode, batch, 128) for p in PRESETS],
                style,
                c=color,
                label=f"{mode}: planner, batch {batch}",
            )
            found = [
                (sizes[p], points[(p, mode, 128)] / GIB)
                for p in PRESETS
                if (p, mode, 128) in points
            ]
            if found:
                by_size.scatter(
                    *zip(*found, strict=True),
                    c=color if fill else "none",
                    edgecolors=color,
                    zorder=3,
                    label=f"{mode}: measured, batch {batch}",
                )
    points = measured(2)
    for mode, color in COLORS.items():
        by_length.plot(
            LENGTHS,
            [predicted("gpt2_base_en", mode, 2, n) for n in LENGTHS],
            "-",
            c=color,
            label=f"{mode}: planner",
        )
        found = [
            (n, points[("gpt2_base_en", mode, n)] / GIB)
            for n in LENGTHS
            if ("gpt2_base_en", mode, n) in points
        ]
        if found:
            by_length.scatter(
                *zip(*found, strict=True), c=color, zorder=3, label=f"{mode}: measured"
            )
    by_size.set(
        xlabel="model size (million weights): base, medium, large",
        ylabel="peak memory (GiB, process resident)",
        title="Peak memory against model size (sequence 128)",
    )
    by_length.set(
        xlabel="sequence length (tokens)",
        ylabel="peak memory (GiB, process resident)",
        title="gpt2_base_en, batch 2: against sequence length",
    )
    for axes in (by_size, by_length):
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
    figure.suptitle(
        "TensorFlow on a 2-core CPU, random weights; the planner's prediction "
        "includes the runtime floor"
    )
    figure.tight_layout()
    figure.savefig(OUT, dpi=110)
    print(OUT)


if __name__ == "__main__":
    main()
