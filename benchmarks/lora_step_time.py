"""Step time of full fine-tuning, our LoRA and Keras's built-in LoRA, on the one runner.

A `compare` of the modes `full`, `lora` and `keras_lora` on the real gpt2_base_en shape
(random weights, no download) at batch 4 x 128 tokens with AdamW: each mode in its own
process, the same step statistics as every other report (`StepTimeCallback`), results.json,
report.md and plots in one folder. Levers (--jit-compile, --mixed-precision, --remat,
--chunked-loss) apply to every mode; `benchmarks/levers.py` measures each one apart.

    python benchmarks/lora_step_time.py --out benchmarks/results/lora_step_time   # ~5 min
"""

import argparse
import sys

from lora_keras.experiments import compare

MODES = ("full", "lora", "keras_lora")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="gpt2_base_en")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--sequence-length", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="a new folder for results.json and report")
    parser.add_argument("--jit-compile", action="store_true")
    parser.add_argument("--mixed-precision", choices=("float16", "bfloat16"), default=None)
    parser.add_argument("--remat", action="store_true")
    parser.add_argument("--chunked-loss", action="store_true")
    args = parser.parse_args(argv)
    results = compare(
        preset=args.preset,
        weights="random",
        modes=MODES,
        steps=args.steps,
        batch_size=args.batch_size,
        sequence_length=args.sequence_length,
        seed=args.seed,
        out=args.out,
        jit_compile=args.jit_compile,
        mixed_precision=args.mixed_precision,
        remat=args.remat,
        chunked_loss=args.chunked_loss,
    )
    runs = {run["mode"]: run for run in results["runs"] if run["status"] == "ok"}
    full = runs.get("full")
    print(f"\n{'mode':<12}{'trainable':>14}{'step (s)':>10}{'x full':>8}{'first (s)':>11}")
    for mode, run in runs.items():
        ratio = f"{run['step_time_s'] / full['step_time_s']:.2f}" if full else "n/a"
        print(
            f"{mode:<12}{run['trainable_params']:>14,}{run['step_time_s']:>10.3f}{ratio:>8}"
            f"{run['first_step_s']:>11.1f}"
        )
    print(f"\nreport: {results['folder']}/report.md")
    return 0 if len(runs) == len(MODES) else 1


if __name__ == "__main__":
    sys.exit(main())
