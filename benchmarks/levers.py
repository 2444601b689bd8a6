"""Each lever's effect on step time, peak memory and loss, and the goals, in one run.

Trains on the gpt2_base_en shape (random weights, no download), batch 4 x 128 tokens,
AdamW, each configuration in its own process on the one runner (`run_experiment`, as
`lora-keras compare`): full fine-tuning and Keras's built-in LoRA at their defaults, our
LoRA plain, with each lever alone, and with the candidate combinations for the two goals. The
report (report.md, levers.png, memory.png...) is drawn from results.json alone.

    python benchmarks/levers.py --out benchmarks/results/levers-cpu      # ~8 min, 2-core CPU
    python benchmarks/levers.py --preset gpt2_tiny --steps 3 --out /tmp/levers   # a check
"""

import argparse
import sys

from lora_keras.experiments.compare import run_experiment
from lora_keras.experiments.run_spec import PlannedRun, RunSpec

# Candidates for the goals, beside each lever alone; the report's "Goals" picks the best
# measured, and the best in float32 throughout. Measured here (2-core CPU, TensorFlow): remat
# and the chunked loss each lower the peak and together lower it most; mixed bfloat16 is fast
# but adding remat to it raised the peak (float32 weights cast to bfloat16 at each use),
# which a bfloat16 frozen model avoids; XLA made no step faster, so it is in no combination.
COMBINATIONS = {
    "remat+chunked_loss": {"remat": True, "chunked_loss": True},
    "bfloat16+chunked_loss": {"mixed_precision": "bfloat16", "chunked_loss": True},
    "bfloat16+remat+chunked_loss": {
        "mixed_precision": "bfloat16",
        "remat": True,
        "chunked_loss": True,
    },
    "frozen_bfloat16+chunked_loss": {"frozen_dtype": "bfloat16", "chunked_loss": True},
    "frozen_bfloat16+remat+chunked_loss": {
        "frozen_dtype": "bfloat16",
        "remat": True,
        "chunked_loss": True,
    },
}


def levers_runs(rank):
    """`(name, mode, rank, options)` of every run, baselines first."""
    runs = [("full", "full", None, {}), ("keras_lora", "keras_lora", rank, {})]
    runs += [
        ("lora", "lora", rank, {}),
        ("lora+xla", "lora", rank, {"jit_compile": True}),
        ("lora+bfloat16", "lora", rank, {"mixed_precision": "bfloat16"}),
        ("lora+frozen_bfloat16", "lora", rank, {"frozen_dtype": "bfloat16"}),
        ("lora+remat", "lora", rank, {"remat": True}),
        ("lora+chunked_loss", "lora", rank, {"chunked_loss": True}),
    ]
    runs += [(f"lora+{name}", "lora", rank, options) for name, options in COMBINATIONS.items()]
    return runs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="gpt2_base_en")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--sequence-length", type=int, default=128)
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--out", default=None, help="a new folder for results.json and report")
    args = parser.parse_args(argv)
    spec = RunSpec(
        kind="levers",
        preset=args.preset,
        weights="random",
        modes=("full", "keras_lora", "lora"),
        steps=args.steps,
        batch_size=args.batch_size,
        sequence_length=args.sequence_length,
        rank=args.rank,
    )
    runs = [PlannedRun(*run) for run in levers_runs(args.rank)]
    results = run_experiment(spec, runs, out=args.out)
    print(f"\nreport: {results['folder']}/report.md")
    return 0 if all(run["status"] == "ok" for run in results["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
