"""The `lora-keras` command line: compare, sweep, report."""

import argparse
import sys

from lora_keras import __version__
from lora_keras.backends import BACKENDS


def _csv(cast):
    return lambda text: [cast(item.strip()) for item in text.split(",") if item.strip()]


def _add_run_arguments(parser, default_steps):
    parser.add_argument("--preset", default="gpt2_base_en", help="preset name, folder or gpt2_tiny")
    parser.add_argument(
        "--weights",
        choices=("pretrained", "random"),
        default=None,
        help="default: pretrained when the KerasHub download host answers, else random",
    )
    parser.add_argument("--data", default="embedded", help="embedded, reddit_tifu or a path")
    parser.add_argument("--steps", type=int, default=default_steps, help="training steps a run")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--sequence-length", type=int, default=128)
    parser.add_argument("--alpha", type=float, default=32.0)
    parser.add_argument("--targets", type=_csv(str), default=["query", "value"])
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="a new folder (default: a timestamped one)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds allowed a run")
    parser.add_argument(
        "--backend",
        choices=tuple(BACKENDS),
        default="tensorflow",
        help="the Keras backend the runs train and measure under",
    )
    parser.add_argument(
        "--data-parallel",
        action="store_true",
        help="train on every visible device (jax or tensorflow); --batch-size is the global batch",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="also show the runtimes' start-up notices"
    )


def _run_arguments(args):
    return dict(
        preset=args.preset,
        weights=args.weights,
        data=args.data,
        steps=args.steps,
        batch_size=args.batch_size,
        sequence_length=args.sequence_length,
        alpha=args.alpha,
        targets=tuple(args.targets),
        learning_rate=args.learning_rate,
        seed=args.seed,
        out=args.out,
        timeout_s=args.timeout,
        backend=args.backend,
        data_parallel=args.data_parallel,
        verbose=2 if args.verbose else 1,
    )


# The summary columns that fit a terminal; report.md has them all.
TERMINAL_COLUMNS = (
    "run",
    "status",
    "trainable weights",
    "step time (median)",
    "vs full",
    "peak memory",
    "final loss",
)


def _print_summary(results):
    from lora_keras.report.markdown import SUMMARY_COLUMNS, summary_cells

    keep = [SUMMARY_COLUMNS.index(column) for column in TERMINAL_COLUMNS]
    rows = [TERMINAL_COLUMNS] + [
        tuple(cells[i] for i in keep) for cells in summary_cells(results["runs"])
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(keep))]
    print()
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    print(f"\nreport: {results['folder']}/report.md")


def _compare(args):
    from lora_keras.experiments import compare

    results = compare(
        modes=tuple(args.modes),
        rank=args.rank,
        sample_prompts=tuple(args.sample_prompts),
        sample_length=args.sample_length,
        **_run_arguments(args),
    )
    _print_summary(results)
    return 0 if all(run["status"] == "ok" for run in results["runs"]) else 1


def _sweep(args):
    from lora_keras.experiments import sweep

    results = sweep(ranks=args.ranks, with_full=args.with_full, **_run_arguments(args))
    _print_summary(results)
    return 0 if all(run["status"] == "ok" for run in results["runs"]) else 1


def _report(args):
    from lora_keras.report import write_report

    print(write_report(args.folder))
    return 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog="lora-keras",
        description="Measure what LoRA saves against full fine-tuning of KerasHub GPT-2.",
    )
    parser.add_argument("--version", action="version", version=f"lora-keras {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    compare = commands.add_parser("compare", help="full fine-tuning vs LoRA, one process each")
    _add_run_arguments(compare, default_steps=10)
    compare.add_argument("--modes", type=_csv(str), default=["full", "lora"])
    compare.add_argument("--rank", type=int, default=4)
    compare.add_argument(
        "--sample-prompts",
        type=_csv(str),
        default=[],
        help="comma-separated prompts to generate from after training (timed)",
    )
    compare.add_argument("--sample-length", type=int, default=64, help="tokens a sample")
    compare.set_defaults(run=_compare)

    sweep = commands.add_parser("sweep", help="LoRA at several ranks, one process each")
    _add_run_arguments(sweep, default_steps=10)
    sweep.add_argument("--ranks", type=_csv(int), default=[1, 2, 4, 8, 16, 64])
    sweep.add_argument(
        "--with-full", action="store_true", help="also train full fine-tuning, as a baseline"
    )
    sweep.set_defaults(run=_sweep)

    report = commands.add_parser("report", help="redraw a report from its results.json")
    report.add_argument("folder")
    report.set_defaults(run=_report)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError, FileExistsError, ConnectionError) as error:
        print(f"lora-keras: error: {error}", file=sys.stderr)
        return 2
