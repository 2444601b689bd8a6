"""K LoRA adapters trained together on one frozen GPT-2 against the same K one after another.

Every run is its own process (one "together" run, then K "alone" runs), so each peak resident
memory and each compiled graph is its own. Both sides start from the same random base (seed 0),
the same A of each adapter (seeded by its index, B at zero), see the same batches (each adapter
`--batch-size` sequences a step, seeded by adapter and step) and step with AdamW; together, the
batch holds every adapter's sequences and the loss is the sum of each adapter's mean
(`adapter_sample_weight`), so each adapter's steps are its separate run's within round-off.

    python benchmarks/multi_lora_together.py                                   # gpt2_tiny, quick
    python benchmarks/multi_lora_together.py --preset gpt2_base_en --steps 3 \\
        --out benchmarks/results/multi-lora-together-cpu.json
    python benchmarks/multi_lora_together.py --preset gpt2_base_en --steps 4 \\
        --chunked-loss --remat --out benchmarks/results/multi-lora-together-cpu-chunked-remat.json
    python benchmarks/multi_lora_together.py --preset gpt2_base_en --steps 3 \\
        --chunked-loss --remat --frozen-dtype bfloat16 \\
        --out benchmarks/results/multi-lora-together-cpu-chunked-remat-bf16.json

The levers (`--chunked-loss`, `--remat`, `--frozen-dtype`) are the package's
(`lora_keras.levers`), applied as `train_one` applies them and the same on both sides: the
chunked loss computes the cross-entropy 32 positions at a time, never the whole logits
tensor; remat recomputes each block in the backward pass; a half-precision frozen model keeps
the adapters float32. `--remat` on the multi-adapter side runs with `--chunked-loss` only
(its adapter ids stay set through the recomputation there); the plain task model's would not.

Reported per run: wall time of the process's training (first step apart), median steady step,
tokens per second (summed over adapters), peak resident memory (`ru_maxrss`, the process's; on
a CPU that is the memory there is), and each adapter's loss on its last batch after training.
"""

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

from _multi_lora_common import (
    RANKS,
    adapter_settings,
    environment,
    initial_a,
    load_average,
    random_gpt2,
    write_results,
)

LEVERS = ("chunked_loss", "remat", "frozen_dtype")  # lora_keras.levers.options.Options fields


def _batches(args, adapter, step):
    import numpy as np

    from lora_keras.models import GPT2_ARCHITECTURES

    vocabulary = GPT2_ARCHITECTURES[args.preset]["vocabulary_size"]
    rng = np.random.default_rng(1000 * adapter + step)
    tokens = rng.integers(0, vocabulary, (args.batch_size, args.sequence_length + 1))
    x = {
        "token_ids": tokens[:, :-1].astype("int32"),
        "padding_mask": np.ones((args.batch_size, args.sequence_length), "int32"),
    }
    return x, tokens[:, 1:].astype("int32")


def _options(args):
    """The levers, checked by the package as `compare` checks them."""
    from lora_keras.levers.options import Options

    return Options(**{name: getattr(args, name) for name in LEVERS}).to_json()


def _model(args):
    """The random base, in `--frozen-dtype` if given."""
    return random_gpt2(args.preset, dtype=args.frozen_dtype)


def _token_losses(lm, x, y):
    import numpy as np
    from keras import ops

    logits = np.asarray(ops.convert_to_numpy(lm.predict_on_batch(x)), "float64")
    logits -= logits.max(axis=-1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    return -np.take_along_axis(log_probs, y[..., None], axis=-1)[..., 0]


def _train(lm, batch_of_step, steps):
    """Step times; `batch_of_step(step)` gives `(x, y, sample_weight)`."""
    times = []
    for step in range(steps):
        x, y, weights = batch_of_step(step)
        start = time.perf_counter()
        lm.train_on_batch(x, y, sample_weight=weights)
        times.append(time.perf_counter() - start)
    return times


def _compile(lm, args):
    """The model that trains, compiled: `lm`, or its backbone under the chunked loss.

    As `train_one` does it: remat after the adapters (it wraps the blocks they are in), a
    float16 frozen model's optimizer loss-scaled.
    """
    import keras

    from lora_keras.levers import options as levers
    from lora_keras.levers.chunked_loss import ChunkedLossCausalLM

    options = _options(args)
    if options["remat"]:
        levers.rematerialise_blocks(lm.backbone)
    optimizers = {
        "adamw": lambda: keras.optimizers.AdamW(1e-3, weight_decay=0.01),
        "sgd": lambda: keras.optimizers.SGD(0.1),
    }
    optimizer = levers.loss_scaled(optimizers[args.optimizer](), options)
    if options["chunked_loss"]:
        model = ChunkedLossCausalLM(lm.backbone, levers.CHUNK_SIZE)
        model.compile(optimizer=optimizer)
    else:
        model = lm
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        model.compile(optimizer=optimizer, loss=loss)
    return model


def run_together(args):
    import numpy as np

    from lora_keras.gpt2_surgery import multi_lora_layers
    from lora_keras.multi_lora import adapter_sample_weight, apply_multi_lora

    lm = _model(args)
    ranks = RANKS[: args.adapters]
    apply_multi_lora(lm, adapter_settings(ranks))
    for layer in multi_lora_layers(lm).values():
        for k, rank in enumerate(ranks):
            own = layer.get_adapter(k)
            own["lora_kernel_a"] = initial_a(own["lora_kernel_a"].shape, k)
            layer.set_adapter(k, own, rank, 2.0 * rank)
    model = _compile(lm, args)

    def batch_of_step(step):
        parts = [_batches(args, k, step) for k in range(len(ranks))]
        x = {key: np.concatenate([p[0][key] for p in parts]) for key in parts[0][0]}
        x["adapter_ids"] = np.repeat(np.arange(len(ranks), dtype="int32"), args.batch_size)
        y = np.concatenate([p[1] for p in parts])
        return x, y, adapter_sample_weight(x["adapter_ids"], x["padding_mask"])

    times = _train(model, batch_of_step, args.steps)
    x, y, _ = batch_of_step(args.steps - 1)
    losses = _token_losses(lm, x, y).reshape(len(ranks), args.batch_size, -1).mean(axis=(1, 2))
    return times, args.batch_size * len(ranks), [float(v) for v in losses]


def run_alone(args, k):
    import lora_keras as lk

    lm = _model(args)
    rank = RANKS[k]
    for layer in lk.apply_lora(lm, rank=rank, alpha=2.0 * rank):
        layer.lora_kernel_a.assign(initial_a(tuple(layer.lora_kernel_a.shape), k))
    model = _compile(lm, args)

    def batch_of_step(step):
        x, y = _batches(args, k, step)
        return x, y, None

    times = _train(model, batch_of_step, args.steps)
    x, y, _ = batch_of_step(args.steps - 1)
    return times, args.batch_size, [float(_token_losses(lm, x, y).mean())]


def child(args):
    started = time.perf_counter()
    if args.child == "together":
        times, sequences, losses = run_together(args)
    else:
        times, sequences, losses = run_alone(args, int(args.child))
    steady = times[1:] or times
    tokens = sequences * args.sequence_length
    record = {
        "run": args.child,
        "process_seconds": time.perf_counter() - started,
        "train_seconds": sum(times),
        "first_step_seconds": times[0],
        "median_step_seconds": statistics.median(steady),
        "step_seconds": times,
        "tokens_per_step": tokens,
        "tokens_per_second": tokens / statistics.median(steady),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "load_average_at_end": load_average(),  # the step times' noise on a shared machine
        "final_losses": losses,
    }
    print("RESULT " + json.dumps(record))


def _spawn(args, which):
    command = [sys.executable, __file__, "--child", which]
    for name in ("preset", "adapters", "batch_size", "sequence_length", "steps", "optimizer"):
        command += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    command += ["--chunked-loss"] * args.chunked_loss + ["--remat"] * args.remat
    command += ["--frozen-dtype", args.frozen_dtype] if args.frozen_dtype else []
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])


def main(args):
    together = _spawn(args, "together")
    alone = [_spawn(args, str(k)) for k in range(args.adapters)]
    steady_alone = sum(a["median_step_seconds"] for a in alone)
    summary = {
        "peak_rss_together_over_sum_alone": together["peak_rss_bytes"]
        / sum(a["peak_rss_bytes"] for a in alone),
        "peak_rss_together_over_max_alone": together["peak_rss_bytes"]
        / max(a["peak_rss_bytes"] for a in alone),
        # Tokens per second of all K adapters: together's, and the K runs one after another's.
        "tokens_per_second_together": together["tokens_per_second"],
        "tokens_per_second_one_after_another": sum(a["tokens_per_step"] for a in alone)
        / steady_alone,
        "train_seconds_together": together["train_seconds"],
        "train_seconds_one_after_another": sum(a["train_seconds"] for a in alone),
        "max_relative_loss_difference": max(
            abs(t - a["final_losses"][0]) / abs(a["final_losses"][0])
            for t, a in zip(together["final_losses"], alone, strict=True)
        ),
    }
    results = {
        "config": {**vars(args), "ranks": list(RANKS[: args.adapters])},
        "options": _options(args),
        "environment": environment(
            memory_source="peak resident memory of each process (ru_maxrss)"
        ),
        "together": together,
        "alone": alone,
        "summary": summary,
    }
    write_results(args.out, results)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="gpt2_tiny")
    parser.add_argument("--adapters", type=int, default=4, choices=range(1, len(RANKS) + 1))
    parser.add_argument("--batch-size", type=int, default=4, help="sequences per adapter a step")
    parser.add_argument("--sequence-length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--optimizer", default="adamw", choices=("adamw", "sgd"))
    parser.add_argument("--chunked-loss", action="store_true", help="cross-entropy in chunks")
    parser.add_argument("--remat", action="store_true", help="recompute blocks (backward pass)")
    parser.add_argument("--frozen-dtype", default=None, choices=("bfloat16", "float16"))
    parser.add_argument("--out", default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parsed = parser.parse_args()
    if parsed.remat and not parsed.chunked_loss:
        parser.error(
            "--remat needs --chunked-loss here: the multi-adapter task model "
            "(MultiAdapterGPT2CausalLM) sets its adapter ids for its forward pass only, and "
            "remat recomputes the blocks after it; the chunked loss keeps them for the step."
        )
    child(parsed) if parsed.child else main(parsed)
