"""The `lora-keras` command line: compare, sweep, report."""

import argparse
import sys

from lora_keras import __version__
from lora_keras.backends import BACKENDS
from lora_keras.experiments.train_one import MODES
from lora_keras.models.architectures import KNOWN_PRESETS
from lora_keras.targets import TARGETS

# What the command's exit status means (also in `--help`).
EXIT_OK = 0
EXIT_RUN_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_REPORT_INCOMPLETE = 3
EXIT_INTERRUPTED = 130
EXIT_CODES = f"""exit status:
  {EXIT_OK}    every run finished ("ok")
  {EXIT_RUN_FAILED}    a run failed, ran out of memory, was killed, timed out or its loss went
       non-finite (the others finished; report.md says which and why)
  {EXIT_BAD_INPUT}    bad input: an argument, the data, the preset or the output folder was refused
       before anything ran (the message names the flag)
  {EXIT_REPORT_INCOMPLETE}    a file could not be written (a full or read-only disk):
       results.json is whole or absent (files are written whole or not at all) and the
       report may be incomplete; free space, then `lora-keras report FOLDER` redraws it
  {EXIT_INTERRUPTED}  interrupted by Ctrl-C, SIGTERM or SIGHUP: the running child was stopped and
       results.json and report.md hold the runs that finished"""


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after each flag's help (a `None` default is said in words); the epilog
    keeps its lines."""

    def _get_help_string(self, action):
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def _csv(cast):
    return lambda text: [cast(item.strip()) for item in text.split(",") if item.strip()]


def _add_run_arguments(parser, default_steps):
    parser.add_argument(
        "--preset",
        default="gpt2_base_en",
        help=f"a GPT-2 preset ({', '.join(KNOWN_PRESETS)}) or a folder written by save_to_preset",
    )
    parser.add_argument(
        "--weights",
        choices=("pretrained", "random"),
        default=None,
        help="pretrained downloads the KerasHub preset; random builds the same architecture "
        "offline. Default: pretrained when the KerasHub download host answers, else random",
    )
    parser.add_argument(
        "--data",
        default="embedded",
        help="embedded (shipped, offline), reddit_tifu (TFDS download) or a path to a .txt "
        "file, a .jsonl file or a folder of them",
    )
    parser.add_argument(
        "--text-field", default="text", help="the field of a .jsonl record that holds its text"
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=default_steps,
        help="training steps a run, at least 2 (the first is timed apart)",
    )
    parser.add_argument("--batch-size", type=int, default=4, help="sequences a training step")
    parser.add_argument(
        "--sequence-length",
        type=int,
        default=128,
        help="tokens a sequence, at most the preset's positions (1024 for GPT-2, 512 gpt2_tiny)",
    )
    parser.add_argument(
        "--alpha", type=float, default=32.0, help="LoRA scaling: the update is scaled by alpha/rank"
    )
    parser.add_argument(
        "--targets",
        type=_csv(str),
        default="query,value",
        help=f"comma-separated projections LoRA wraps, among: {', '.join(TARGETS)}",
    )
    parser.add_argument(
        "--learning-rate", type=float, default=5e-5, help="AdamW learning rate, above 0"
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds the weights and data order")
    parser.add_argument(
        "--out",
        default=None,
        help="a folder that must not exist yet. Default: a new "
        "lora-keras-results/KIND-DATE-TIME-PID-XXXX",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds allowed a run before it is stopped (default: no limit)",
    )
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
        text_field=args.text_field,
        backend=args.backend,
        data_parallel=args.data_parallel,
        verbose=2 if args.verbose else 1,
    )


def _add_option_arguments(parser):
    # The levers of every run (lora_keras.levers.options.OPTIONS); each is recorded.
    parser.add_argument(
        "--jit-compile",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="compile the training step with XLA (default: off, see README)",
    )
    parser.add_argument(
        "--mixed-precision",
        choices=("float16", "bfloat16"),
        default=None,
        help="Keras mixed_<dtype> policy: weights and loss stay float32",
    )
    parser.add_argument(
        "--frozen-dtype",
        choices=("float16", "bfloat16"),
        default=None,
        help="store and compute the frozen weights in this dtype; LoRA's weights and the loss "
        "stay float32 (modes lora, dora)",
    )
    parser.add_argument(
        "--remat", action="store_true", help="recompute transformer blocks in the backward pass"
    )
    parser.add_argument(
        "--chunked-loss", action="store_true", help="cross-entropy over sequence chunks"
    )


def _option_arguments(args):
    return dict(
        jit_compile=args.jit_compile,
        mixed_precision=args.mixed_precision,
        frozen_dtype=args.frozen_dtype,
        remat=args.remat,
        chunked_loss=args.chunked_loss,
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
        options_sweep=args.options_sweep,
        **_run_arguments(args),
        **_option_arguments(args),
    )
    return _finish(results)


def _sweep(args):
    from lora_keras.experiments import sweep

    results = sweep(
        ranks=args.ranks,
        with_full=args.with_full,
        **_run_arguments(args),
        **_option_arguments(args),
    )
    return _finish(results)


def _finish(results):
    _print_summary(results)
    ok = all(run["status"] == "ok" for run in results["runs"])
    return EXIT_OK if ok else EXIT_RUN_FAILED


def _report(args):
    from lora_keras.report import write_report
    from lora_keras.report.results import load_results, unfinished_runs

    print(write_report(args.folder))
    unfinished = unfinished_runs(load_results(args.folder))
    if unfinished:
        missing = ", ".join(f"{label} ({status})" for label, status in unfinished)
        print(f"lora-keras: warning: incomplete comparison, missing: {missing}", file=sys.stderr)
    return EXIT_OK


def build_parser():
    common = dict(formatter_class=_HelpFormatter, epilog=EXIT_CODES)
    parser = argparse.ArgumentParser(
        prog="lora-keras",
        description="Measure what LoRA saves against full fine-tuning of KerasHub GPT-2: "
        "step time, throughput, peak memory and loss, each run in its own process, into a "
        "folder with results.json, report.md and plots.",
        **common,
    )
    parser.add_argument("--version", action="version", version=f"lora-keras {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    compare = commands.add_parser(
        "compare",
        help="full fine-tuning vs LoRA, one process each",
        description="Train each mode in a fresh process on the same data, seed and optimizer, "
        "and write results.json, report.md and plots into a new folder.",
        **common,
    )
    _add_run_arguments(compare, default_steps=10)
    compare.add_argument(
        "--modes",
        type=_csv(str),
        default="full,lora",
        help=f"comma-separated training modes, each once, among: {', '.join(MODES)}",
    )
    compare.add_argument("--rank", type=int, default=4, help="the rank of the LoRA-family modes")
    compare.add_argument(
        "--sample-prompts",
        type=_csv(str),
        default="",
        help="comma-separated prompts to generate from after training (timed)",
    )
    compare.add_argument(
        "--sample-length", type=int, default=64, help="the most tokens a sample has, at least 1"
    )
    _add_option_arguments(compare)
    compare.add_argument(
        "--options-sweep",
        action="store_true",
        help="train each mode again once per lever, that lever alone, to see its effect",
    )
    compare.set_defaults(run=_compare)

    sweep = commands.add_parser(
        "sweep",
        help="LoRA at several ranks, one process each",
        description="Train LoRA once per rank, each in a fresh process: trainable weights, "
        "peak memory, step time and final loss against the rank.",
        **common,
    )
    _add_run_arguments(sweep, default_steps=10)
    sweep.add_argument(
        "--ranks",
        type=_csv(int),
        default="1,2,4,8,16,64",
        help="comma-separated LoRA ranks, each once",
    )
    sweep.add_argument(
        "--with-full", action="store_true", help="also train full fine-tuning, as a baseline"
    )
    _add_option_arguments(sweep)
    sweep.set_defaults(run=_sweep)

    report = commands.add_parser(
        "report",
        help="redraw a report from its results.json",
        description="Check FOLDER/results.json, then (re)write report.md and the plots from it "
        "alone. An interrupted comparison's report says which runs are missing.",
        **common,
    )
    report.add_argument("folder", help="a folder written by `lora-keras compare` or `sweep`")
    report.set_defaults(run=_report)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    from lora_keras.experiments.compare import Interrupted

    try:
        return args.run(args)
    except Interrupted as interrupted:
        where = (
            f": {interrupted.folder}/report.md holds the runs that finished"
            if interrupted.folder
            else " before any run started"
        )
        print(f"lora-keras: interrupted by {interrupted.signal_name}{where}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("lora-keras: interrupted by SIGINT before any run started", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ValueError, FileNotFoundError, FileExistsError, ConnectionError, ImportError) as error:
        print(f"lora-keras: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as error:
        # What the disk says (full, read-only) while the results or the report were written.
        from lora_keras.report.write_report import ReportIncomplete  # here: it imports Keras

        said = "" if isinstance(error, ReportIncomplete) else "could not write the results: "
        print(f"lora-keras: error: {said}{error}", file=sys.stderr)
        return EXIT_REPORT_INCOMPLETE


if __name__ == "__main__":
    sys.exit(main())
