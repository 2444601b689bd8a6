"""What each method learns and what it forgets, in one run: the learn/forget comparison.

Fine-tunes gpt2_mini (pretrained by this package on five families of the embedded corpus, no
network) on the sixth, the recipe family it never saw, with full fine-tuning, LoRA at ranks 1, 4
and 16, Keras's own LoRA, DoRA, QLoRA and MixLoRA: the same data, seed, optimizer and steps.
Every run evaluates its held-out loss before its first step and after its last, on held-out
recipes ("target": what it learned) and on held-out documents of the five pretraining families
("keep": what it forgot). The report (report.md, learn_forget.png) is drawn from results.json.

    python benchmarks/learn_forget.py --out benchmarks/results/learn-forget-cpu   # ~6 min, CPU

On Colab, the same comparison on GPT-2 base with its pretrained weights (it cannot run offline):

    python benchmarks/learn_forget.py --preset gpt2_base_en --data reddit_tifu \
        --keep-data embedded --steps 500 --out learn-forget-gpt2-base
"""

import argparse
import sys

from lora_keras.experiments.compare import run_experiment
from lora_keras.experiments.run_spec import PlannedRun, RunSpec

MODES = ("full", "lora", "keras_lora", "dora", "qlora", "mixlora")
LORA_RANKS = (1, 4, 16)


def learn_forget_runs(rank):
    """`PlannedRun`s of every method: full fine-tuning first, LoRA at each of `LORA_RANKS`."""
    runs = [PlannedRun("full", "full")]
    runs += [PlannedRun(f"lora_rank_{r}", "lora", r) for r in LORA_RANKS]
    runs += [PlannedRun(mode, mode, rank) for mode in ("keras_lora", "dora", "qlora")]
    return runs + [PlannedRun("mixlora", "mixlora", 8)]  # MixLoRA's own rank


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="gpt2_mini")
    parser.add_argument("--data", default="embedded:recipe")
    parser.add_argument("--keep-data", default=None, help="default: the preset's own, if any")
    parser.add_argument("--steps", type=int, default=240)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--sequence-length", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--rank", type=int, default=4, help="of keras_lora, dora and qlora")
    parser.add_argument("--out", default=None, help="a new folder for results.json and report")
    args = parser.parse_args(argv)
    spec = RunSpec(
        kind="learn_forget",
        preset=args.preset,
        weights="pretrained",
        data=args.data,
        keep_data=args.keep_data,
        modes=MODES,
        steps=args.steps,
        batch_size=args.batch_size,
        sequence_length=args.sequence_length,
        rank=args.rank,
        alpha=16.0,
        learning_rate=args.learning_rate,
    )
    results = run_experiment(spec, learn_forget_runs(args.rank), out=args.out)
    print(f"\nreport: {results['folder']}/report.md")
    return 0 if all(run["status"] == "ok" for run in results["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
