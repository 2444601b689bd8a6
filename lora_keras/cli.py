"""The `lora-keras` command line: compare, sweep, report."""

import argparse
import dataclasses
import sys

from lora_keras import __version__
from lora_keras.experiments.checks import flag_name
from lora_keras.experiments.keywords import arguments
from lora_keras.experiments.run_spec import RunSpec
from lora_keras.levers.options import OPTIONS, Options
from lora_keras.planner.command import add_plan_command

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


# What compare and sweep take beside a run's description: where the results go, how much to
# show, and sweep's baseline (said in its spec by the modes).
_STEERING = {
    "out": dict(
        default=None,
        help="a folder that must not exist yet. Default: a new "
        "lora-keras-results/KIND-DATE-TIME-PID-XXXX",
    ),
    "verbose": dict(action="store_true", help="also show the runtimes' start-up notices"),
    "with_full": dict(action="store_true", help="also train full fine-tuning, as a baseline"),
}
_SHARED_FLAGS = (
    "preset",
    "weights",
    "data",
    "text_field",
    "keep_data",
    "eval_documents",
    "steps",
    "batch_size",
    "sequence_length",
    "alpha",
    "targets",
    "learning_rate",
    "seed",
    "out",
    "timeout_s",
    "backend",
    "data_parallel",
    "try_anyway",
    "verbose",
)
# Each command's flags, in the order its --help lists them. Every flag is declared once, by
# `_add_flag`, from the field that holds its setting (RunSpec's, Options's) or `_STEERING`.
FLAGS = {
    "compare": (
        *_SHARED_FLAGS,
        *("modes", "rank", "sample_prompts", "sample_length"),
        *OPTIONS,
        "options_sweep",
    ),
    "sweep": (*_SHARED_FLAGS, "ranks", "with_full", "together", *OPTIONS),
}


def _add_flag(parser, command, name):
    if name in _STEERING:
        parser.add_argument(flag_name(name), dest=name, **_STEERING[name])
        return
    field = _SETTINGS[name]
    metadata = dict(field.metadata)
    default = arguments(command)[name]
    kwargs = {key: metadata[key] for key in ("type", "choices", "action") if key in metadata}
    if "csv" in metadata:  # shown as typed; argparse reads a default string through `type`
        kwargs["type"] = _csv(metadata["csv"])
        default = ",".join(map(str, default))
    flag = flag_name(name)
    if flag != "--" + name.replace("_", "-") and "action" not in kwargs:
        kwargs["metavar"] = flag.removeprefix("--").replace("-", "_").upper()
    parser.add_argument(flag, dest=name, default=default, help=metadata["help"], **kwargs)


_SETTINGS = {
    field.name: field for dataclass in (RunSpec, Options) for field in dataclasses.fields(dataclass)
}


def _run_arguments(args):
    """The keywords of `compare` or `sweep` that the command line gives."""
    values = {name: getattr(args, name) for name in FLAGS[args.command]}
    values["verbose"] = 2 if args.verbose else 1
    return values


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


def _run(args):
    from lora_keras import experiments

    results = getattr(experiments, args.command)(**_run_arguments(args))
    return _finish(results)


def _finish(results):
    _print_summary(results)
    ok = all(run["status"] == "ok" for run in results["runs"])
    return EXIT_OK if ok else EXIT_RUN_FAILED


def _report(args):
    from lora_keras.report.results import UNFINISHED, load_results, run_label, unfinished_runs

    # Checked before the drawing libraries load, so that a bad folder is refused at once.
    results = load_results(args.folder)
    from lora_keras.report import write_report

    print(write_report(args.folder))
    unfinished = unfinished_runs(results)
    if unfinished:
        missing = ", ".join(f"{label} ({status})" for label, status in unfinished)
        print(f"lora-keras: warning: incomplete comparison, missing: {missing}", file=sys.stderr)
    runs = results["runs"]
    failed = [run for run in runs if run["status"] not in ("ok", *UNFINISHED)]
    if failed:
        said = ", ".join(f"{run_label(run)} ({run['status']})" for run in failed)
        print(f"lora-keras: {len(failed)} of {len(runs)} runs failed: {said}", file=sys.stderr)
        return EXIT_RUN_FAILED
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
    for name in FLAGS["compare"]:
        _add_flag(compare, "compare", name)
    compare.set_defaults(run=_run)

    sweep = commands.add_parser(
        "sweep",
        help="LoRA at several ranks, one process each",
        description="Train LoRA once per rank, each in a fresh process: trainable weights, "
        "peak memory, step time and final loss against the rank. With --together, also train "
        "every rank at once as adapters of one frozen model, and compare.",
        **common,
    )
    for name in FLAGS["sweep"]:
        _add_flag(sweep, "sweep", name)
    sweep.set_defaults(run=_run)

    report = commands.add_parser(
        "report",
        help="redraw a report from its results.json",
        description="Check FOLDER/results.json, then (re)write report.md and the plots from it "
        "alone. An interrupted comparison's report says which runs are missing.",
        **common,
    )
    report.add_argument("folder", help="a folder written by `lora-keras compare` or `sweep`")
    report.set_defaults(run=_report)

    add_plan_command(commands, **common)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    from lora_keras.experiments.signals import Interrupted

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
        from lora_keras.experiments.runner import ResultsNotSaved
        from lora_keras.report.write_report import ReportIncomplete

        whole = isinstance(error, (ReportIncomplete, ResultsNotSaved))
        said = "" if whole else "could not write the results: "
        print(f"lora-keras: error: {said}{error}", file=sys.stderr)
        return EXIT_REPORT_INCOMPLETE


if __name__ == "__main__":
    sys.exit(main())
