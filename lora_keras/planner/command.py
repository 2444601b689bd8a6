"""`lora-keras plan`: the planner's subcommand, its flags and its printout (Keras-free)."""

import json

from lora_keras.levers.options import FROZEN_DTYPES, MIXED_PRECISION
from lora_keras.planner.counting import MODES
from lora_keras.planner.devices import DEVICES
from lora_keras.planner.framework import BACKENDS
from lora_keras.planner.plan import frameworks_note, plan
from lora_keras.units import format_bytes

COLUMNS = (
    "weights",
    "gradients",
    "optimizer_state",
    "activations",
    "framework",
    "optimizer_update",
    "runtime",
)


def add_plan_command(commands, **common):
    """Adds `plan` to the `lora-keras` subcommands `commands` (an argparse subparsers)."""
    parser = commands.add_parser(
        "plan",
        help="predict each mode's peak memory before running it",
        description="Predict each mode's peak memory, by component, without building a model "
        "(about a second, offline, no accelerator needed), and whether it fits --device or "
        "--memory; where it does not, the levers that would make it fit and their measured "
        "speed cost. Calibrated on the committed results: benchmarks/results/"
        "planner-calibration.md.",
        **common,
    )
    parser.add_argument("--preset", default="gpt2_base_en", help="a GPT-2 preset name")
    parser.add_argument(
        "--modes", default="full,lora,qlora", help=f"comma-separated, among {', '.join(MODES)}"
    )
    parser.add_argument("--batch-size", type=int, default=4, help="sequences a training step")
    parser.add_argument("--sequence-length", type=int, default=128, help="tokens a sequence")
    parser.add_argument(
        "--backend", choices=BACKENDS, default="tensorflow", help="the Keras backend to plan for"
    )
    parser.add_argument("--rank", type=int, default=4, help="LoRA's rank")
    parser.add_argument(
        "--targets", default="query,value", help="comma-separated projections LoRA wraps"
    )
    parser.add_argument(
        "--mixed-precision", choices=MIXED_PRECISION[1:], default=None, help="as compare's"
    )
    parser.add_argument(
        "--frozen-dtype", choices=FROZEN_DTYPES[1:], default=None, help="as compare's"
    )
    parser.add_argument("--remat", action="store_true", help="as compare's")
    parser.add_argument("--chunked-loss", action="store_true", help="as compare's")
    parser.add_argument("--jit-compile", action="store_true", help="XLA (changes JAX's plan)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--device", default=None, help=f"one of {', '.join(DEVICES)}")
    where.add_argument("--memory", default=None, help="a memory budget, e.g. 15GiB or 16GB")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.set_defaults(run=run_plan)
    return parser


def run_plan(args):
    """The handler of `lora-keras plan`: prints the table (or JSON); exit 0."""
    options = {
        "jit_compile": args.jit_compile,
        "mixed_precision": args.mixed_precision,
        "frozen_dtype": args.frozen_dtype,
        "remat": args.remat,
        "chunked_loss": args.chunked_loss,
    }
    rows = plan(
        args.preset,
        modes=[m.strip() for m in args.modes.split(",") if m.strip()],
        batch_size=args.batch_size,
        sequence_length=args.sequence_length,
        backend=args.backend,
        device=args.device,
        memory=args.memory,
        options=options,
        rank=args.rank,
        targets=[t.strip() for t in args.targets.split(",") if t.strip()],
    )
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(format_plan(rows, args))
    return 0


def format_plan(rows, args):
    """The plan as a text table, one line a mode, and the levers of those that do not fit."""
    kind = "cpu" if rows[0]["components"]["runtime"] or args.device == "cpu" else "gpu"
    header = ["mode", "peak", *COLUMNS, "fits"]
    lines = [
        f"{args.preset}, batch {args.batch_size} x {args.sequence_length}, {args.backend} on "
        f"{args.device or ('a ' + args.memory + ' GPU' if args.memory else 'a CPU')} "
        f"({frameworks_note(args.backend, kind, args.jit_compile)})",
        "  ".join(f"{h:>12s}" for h in header),
    ]
    for row in rows:
        fits = {None: "-", True: "yes", False: "NO"}[row["fits"]]
        cells = [row["mode"], format_bytes(row["predicted_peak_bytes"])]
        cells += [format_bytes(row["components"].get(name, 0)) for name in COLUMNS]
        lines.append("  ".join(f"{c:>12s}" for c in [*cells, fits]))
    for row in rows:
        if row["fits"] is False:
            budget = format_bytes(row["budget_bytes"])
            if not row["levers"]:
                lines.append(f"{row['mode']}: over {budget}, and no single lever brings it under.")
            for lever in row["levers"]:
                cost = (
                    f"{lever['speed_cost']:.2f}x step time (measured, "
                    f"{lever['speed_cost_measured_on']})"
                    if lever["speed_cost"]
                    else "speed cost not measured"
                )
                lines.append(
                    f"{row['mode']}: fits {budget} with {lever['change']}: "
                    f"{format_bytes(lever['predicted_peak_bytes'])}, {cost}"
                )
    return "\n".join(lines)
