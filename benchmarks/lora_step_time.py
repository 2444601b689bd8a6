"""Step time of full fine-tuning, our LoRA and Keras's built-in LoRA, in one run.

Each configuration trains the real gpt2_base_en shape (random weights, no
download) at batch 4 x 128 tokens with AdamW, in its own process so that one
configuration's compiled graphs and memory cannot slow another. A last process
times the forward pass of the base model, of LoRA unmerged and of LoRA merged.

    python benchmarks/lora_step_time.py            # ~5 minutes on a 2-core CPU
    python benchmarks/lora_step_time.py --steps 20 --out benchmarks/results/lora_step_time.json

Prints a table with ratios to full fine-tuning and writes the measurements as
JSON (written whole or not at all).
"""

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time

CONFIGS = ("full", "lora", "keras_builtin_lora")


def _architecture():
    from lora_keras.models import GPT2_ARCHITECTURES

    return GPT2_ARCHITECTURES["gpt2_base_en"]


def _build(config, seed):
    import keras
    import keras_hub

    import lora_keras as lk

    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.GPT2Backbone(**_architecture())
    lm = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    if config == "lora":
        lk.apply_lora(lm, rank=4, alpha=32.0)
    elif config == "keras_builtin_lora":
        backbone.enable_lora(4)
    return lm


def _batch(batch_size, sequence_length, seed):
    import numpy as np

    rng = np.random.default_rng(seed)
    vocabulary_size = _architecture()["vocabulary_size"]
    tokens = rng.integers(0, vocabulary_size, (batch_size, sequence_length + 1))
    x = {"token_ids": tokens[:, :-1], "padding_mask": np.ones_like(tokens[:, :-1])}
    return x, tokens[:, 1:]


def _time_training(config, steps, batch_size, sequence_length, seed):
    import keras

    lm = _build(config, seed)
    lm.compile(
        optimizer=keras.optimizers.AdamW(5e-5),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    lm.optimizer.build(lm.trainable_variables)  # as lk.compare does: one trace, not two
    x, y = _batch(batch_size, sequence_length, seed)
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        lm.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    steady = times[1:]
    return {
        "config": config,
        "trainable_params": sum(math.prod(v.shape) for v in lm.trainable_weights),
        "first_step_s": times[0],
        "step_time_s": statistics.median(steady),
        "step_time_min_s": min(steady),
        "step_time_max_s": max(steady),
        "steps": steps,
    }


def _time_forward(repeats, batch_size, sequence_length, seed):
    """Forward pass of the base model, LoRA unmerged and LoRA merged, on one model."""
    import numpy as np

    import lora_keras as lk

    lm = _build("full", seed)
    x, _ = _batch(batch_size, sequence_length, seed)

    def median_forward():
        lm.predict_on_batch(x)  # trace and compile once
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            lm.predict_on_batch(x)
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    base = median_forward()
    wrappers = lk.apply_lora(lm, rank=4, alpha=32.0)
    rng = np.random.default_rng(seed)
    for layer in wrappers:
        layer.lora_kernel_b.assign(rng.normal(0, 0.02, layer.lora_kernel_b.shape))
    unmerged = median_forward()
    lk.merge_lora(lm)
    merged = median_forward()
    return {"base_forward_s": base, "lora_unmerged_forward_s": unmerged, "merged_forward_s": merged}


def _child(args):
    if args.child == "forward":
        result = _time_forward(args.steps, args.batch_size, args.sequence_length, args.seed)
    else:
        result = _time_training(
            args.child, args.steps, args.batch_size, args.sequence_length, args.seed
        )
    print("RESULT " + json.dumps(result))


def _run_child(name, args):
    command = [sys.executable, __file__, "--child", name, "--steps", str(args.steps)]
    command += ["--batch-size", str(args.batch_size), "--sequence-length"]
    command += [str(args.sequence_length), "--seed", str(args.seed)]
    done = subprocess.run(command, capture_output=True, text=True)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    return {"config": name, "error": done.stderr[-2000:]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--sequence-length", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="JSON file for the measurements")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args)

    import keras

    from lora_keras.io_utils import atomic_write_json

    runs = []
    for index, name in enumerate(CONFIGS, start=1):
        print(f"[{index}/{len(CONFIGS) + 1}] training step time: {name}", flush=True)
        runs.append(_run_child(name, args))
    print(f"[{len(CONFIGS) + 1}/{len(CONFIGS) + 1}] forward pass: base, unmerged, merged")
    forward = _run_child("forward", args)
    full = runs[0].get("step_time_s")
    print(f"\n{'config':<22}{'trainable':>14}{'step (s)':>10}{'x full':>8}{'first (s)':>11}")
    for run in runs:
        if "error" in run:
            print(f"{run['config']:<22} failed: {run['error'].splitlines()[-1]}")
            continue
        ratio = run["step_time_s"] / full if full else float("nan")
        print(
            f"{run['config']:<22}{run['trainable_params']:>14,}{run['step_time_s']:>10.3f}"
            f"{ratio:>8.2f}{run['first_step_s']:>11.1f}"
        )
    if "error" not in forward:
        base = forward["base_forward_s"]
        print(f"\nforward pass (batch {args.batch_size} x {args.sequence_length}):")
        for key in ("base_forward_s", "lora_unmerged_forward_s", "merged_forward_s"):
            print(f"  {key:<26}{forward[key]:.3f} s  ({forward[key] / base:.2f}x base)")
    result = {
        "benchmark": "lora_step_time",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "backend": f"{keras.backend.backend()} (keras {keras.__version__})",
        "weights": "random weights, gpt2_base_en shape (no download)",
        "config": vars(args) | {"optimizer": "AdamW", "model": _architecture()},
        "runs": runs,
        "forward": forward,
    }
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        atomic_write_json(args.out, result)
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
