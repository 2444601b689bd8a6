"""Out-of-sample checks of the planner: predicted first and committed, then measured here.

    python benchmarks/planner_check.py predict   # results/planner-check-predictions.json
    bash benchmarks/planner_check.sh             # measures them (TensorFlow, CPU), one by one
    python benchmarks/planner_check.py table     # planner-check.md: predicted vs measured

The predictions are written from the planner alone, before any of these runs exists; `table`
reads them back from that file (never recomputes them) beside each measured results.json.
Shapes no calibration saw: gpt2_medium_en and gpt2_large_en (random weights, 2 x 128), and
LoRA on gpt2_base_en at sequence lengths 128 to 1024 (batch 2).
"""

import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from lora_keras.planner.predict import predict_peak  # noqa: E402
from lora_keras.units import format_bytes  # noqa: E402

RESULTS = os.path.join(os.path.dirname(__file__), "results")
PREDICTIONS = os.path.join(RESULTS, "planner-check-predictions.json")
TABLE = os.path.join(RESULTS, "planner-check.md")
GOAL = 0.15
# folder under benchmarks/results -> (preset, modes, batch size, sequence length)
CHECKS = {
    "planner-check-medium": ("gpt2_medium_en", ("full", "lora", "qlora"), 2, 128),
    "planner-check-large": ("gpt2_large_en", ("full", "lora", "qlora"), 2, 128),
    **{
        f"planner-check-seq-{length}": ("gpt2_base_en", ("lora",), 2, length)
        for length in (128, 256, 512, 1024)
    },
}


# What the measurements above showed, in words (the figures are in the table).
MISSES = [
    "## Where it misses, and why",
    "",
    "- Full fine-tuning of gpt2_medium_en is predicted too high. At its peak, TensorFlow's "
    "optimizer update is modelled as three trainable-sized temporaries beside the gradients "
    "(every variable's update at once, as torch's foreach ops do), which the base model's "
    "full runs agreed with; the larger model shows TensorFlow's graph holds fewer at once, so "
    "that term does not scale with the whole model as assumed.",
    "- QLoRA of gpt2_medium_en is predicted too low. The run builds the float model, then "
    "quantizes it; on a CPU the process keeps the float model's pages resident (the "
    "allocator does not return them) and the activations are allocated beside them, while the "
    "planner counts the NF4 storage only. On the base model the same effect is smaller and sat "
    "inside the calibration's error.",
    "- gpt2_large_en was not measured: full fine-tuning is predicted above the memory this "
    "shared machine had available, and LoRA and QLoRA were left out to keep the checks "
    "within about 40 minutes of machine time.",
    "- LoRA on gpt2_base_en is within the goal up to 512 tokens and predicted too high at "
    "1024, the more so the longer the sequence: the attention-score terms (three batch x "
    "heads x seq x seq tensors a block: probabilities, dropout mask, dropped probabilities) "
    "grow with the square of the length, and the share TensorFlow's graph keeps beyond the "
    "minimal set was fitted at 128 tokens, where hidden-sized tensors dominate. The "
    "measurements say TensorFlow holds fewer score-sized tensors at once than counted.",
    "- LoRA on gpt2_medium_en is within the goal.",
]


def predict():
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    predictions = {"planner_commit": commit, "backend": "tensorflow", "device": "cpu", "runs": []}
    for folder, (preset, modes, batch, length) in CHECKS.items():
        for mode in modes:
            components, phase, counts = predict_peak(preset, mode, batch, length)
            predictions["runs"].append(
                {
                    "folder": folder,
                    "preset": preset,
                    "mode": mode,
                    "batch_size": batch,
                    "sequence_length": length,
                    "predicted_peak_bytes": components["total"],
                    "components": components,
                    "phase": phase,
                    "trainable_params": counts["trainable"],
                    "total_params": counts["total"],
                }
            )
            print(f"{folder:24s} {mode:6s} {format_bytes(components['total'])}")
    with open(PREDICTIONS, "w") as file:
        json.dump(predictions, file, indent=1)


def table():
    with open(PREDICTIONS) as file:
        predictions = json.load(file)
    lines = [
        "# The planner out of sample: predicted before measuring",
        "",
        f"Predictions written by `python benchmarks/planner_check.py predict` at planner commit "
        f"`{predictions['planner_commit'][:10]}` and committed before any run below; measured "
        "with `bash benchmarks/planner_check.sh` (TensorFlow, this 2-core CPU, random weights, "
        f"3 steps). Goal: within +-{GOAL:.0%}.",
        "",
        "| preset | mode | batch x seq | predicted | measured | error | trainable (planner / "
        "built) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in predictions["runs"]:
        path = os.path.join(RESULTS, row["folder"], "results.json")
        run = None
        if os.path.exists(path):
            with open(path) as file:
                runs = json.load(file)["runs"]
            run = next((r for r in runs if r["mode"] == row["mode"]), None)
        shape = f"{row['batch_size']} x {row['sequence_length']}"
        predicted = format_bytes(row["predicted_peak_bytes"])
        if run is None or run.get("status") != "ok":
            why = "not measured" if run is None else f"{run.get('status')}: {run.get('error')}"
            lines.append(
                f"| {row['preset']} | {row['mode']} | {shape} | {predicted} | {why} | - | - |"
            )
            continue
        measured = run["peak_memory_bytes"]
        error = row["predicted_peak_bytes"] / measured - 1
        lines.append(
            f"| {row['preset']} | {row['mode']} | {shape} | {predicted} | "
            f"{format_bytes(measured)} | {error:+.1%} | {row['trainable_params']:,} / "
            f"{run['trainable_params']:,} |"
        )
    lines += ["", *MISSES]
    with open(TABLE, "w") as file:
        file.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    {"predict": predict, "table": table}[sys.argv[1] if len(sys.argv) > 1 else "table"]()
