"""Serving K adapters from one frozen GPT-2: a mixed batch against one merged adapter.

Four models of the same random base (seed 0) generate the same batch of prompts, greedy, in
one process, on one backend, after a warm-up call each (the first call traces and compiles):

- `mixed`: K adapters on the base (`lk.apply_multi_lora`), prompt i with adapter `i % K`;
- `merged`: one adapter (the largest-rank one of the K) folded into the base (`lk.merge_lora`);
- `unmerged`: the same adapter beside the base (`lk.apply_lora`, not merged);
- `base`: the plain base.

The calls are interleaved, round after round, in an order that rotates each round, so a
neighbour's load on a shared machine falls on every variant alike; each figure is the median
over rounds, and each ratio the median of the ratios within a round (`best_*`: the fastest
call of each, the least disturbed by others on a shared machine).

    python benchmarks/multi_lora_serving.py                                   # gpt2_tiny, quick
    python benchmarks/multi_lora_serving.py --preset gpt2_base_en \\
        --out benchmarks/results/multi-lora-serving/cpu-tensorflow.json
    KERAS_BACKEND=jax python benchmarks/multi_lora_serving.py --preset gpt2_base_en \\
        --out benchmarks/results/multi-lora-serving/cpu-jax.json

The adapters are the ranks of a sweep, 4, 8, 16 and 32 (those of `multi_lora_together.py`):
in a mixed batch every prompt pays the padded rank 32, so this is the costlier case for the
mixed batch, and the single-adapter models hold the rank-32 adapter. Tokens per second count
the tokens generated (batch x new tokens) over the whole call, prompt pass included. The check:
the mixed batch's prompts of that adapter generate exactly the unmerged model's tokens.
"""

import argparse
import statistics
import time

from _multi_lora_common import RANKS, adapter_settings, environment, initial_a, random_gpt2

VARIANTS = ("mixed", "merged", "unmerged", "base")
B_SCALE = 0.05  # each B's standard deviation: greedy tokens follow the adapter, W still leads


def _prompts(args):
    """`{token_ids, padding_mask}`: `prompt_length` random tokens, room for `new_tokens`."""
    import numpy as np

    from lora_keras.models import GPT2_ARCHITECTURES

    vocabulary = GPT2_ARCHITECTURES[args.preset]["vocabulary_size"]
    length = args.prompt_length + args.new_tokens
    token_ids = np.zeros((args.batch_size, length), "int32")
    rng = np.random.default_rng(7)
    token_ids[:, : args.prompt_length] = rng.integers(0, vocabulary, (args.batch_size, length))[
        :, : args.prompt_length
    ]
    padding_mask = np.zeros((args.batch_size, length), "int32")
    padding_mask[:, : args.prompt_length] = 1
    return {"token_ids": token_ids, "padding_mask": padding_mask}


def _adapter_weights(shape_a, shape_b, k):
    """Adapter k's A (as the reference LoRA starts it) and a non-zero B, so it matters."""
    import numpy as np

    b = np.random.default_rng(100 + k).normal(0.0, B_SCALE, shape_b).astype("float32")
    return {"lora_kernel_a": initial_a(shape_a, k), "lora_kernel_b": b}


def build_models(args):
    """`({variant: model}, served)`: the models, compiled for greedy generation, and the id of
    the adapter the single-adapter models hold."""
    import lora_keras as lk
    from lora_keras.gpt2_surgery import lora_layers, multi_lora_layers

    ranks = RANKS[: args.adapters]
    mixed = random_gpt2(args.preset)
    lk.apply_multi_lora(mixed, adapter_settings(ranks))
    for layer in multi_lora_layers(mixed).values():
        for k, rank in enumerate(ranks):
            own = layer.get_adapter(k)
            weights = _adapter_weights(own["lora_kernel_a"].shape, own["lora_kernel_b"].shape, k)
            layer.set_adapter(k, weights, rank, 2.0 * rank)
    served, rank = len(ranks) - 1, ranks[-1]  # the single-adapter models' adapter
    models = {"mixed": mixed}
    for variant in ("merged", "unmerged"):
        lm = random_gpt2(args.preset)
        lk.apply_lora(lm, rank=rank, alpha=2.0 * rank)
        adapters = multi_lora_layers(mixed)
        for path, layer in lora_layers(lm).items():
            own = adapters[path].get_adapter(served)
            layer.lora_kernel_a.assign(own["lora_kernel_a"])
            layer.lora_kernel_b.assign(own["lora_kernel_b"])
        if variant == "merged":
            lk.merge_lora(lm)
        models[variant] = lm
    models["base"] = random_gpt2(args.preset)
    for lm in models.values():
        lm.compile(sampler="greedy")
    return models, served


def _generate(variant, lm, x, adapters):
    """The generated token ids, as NumPy (so the call has finished on any backend)."""
    import numpy as np
    from keras import ops

    import lora_keras as lk

    if variant == "mixed":
        return lk.generate(lm, x, adapters=adapters, stop_token_ids=None)["token_ids"]
    outputs = lm.make_generate_function()(x, stop_token_ids=None)
    return np.asarray(ops.convert_to_numpy(outputs["token_ids"]))


def measure(args):
    import numpy as np

    import lora_keras as lk

    models, served = build_models(args)
    x = _prompts(args)
    names = lk.adapter_names(models["mixed"])
    adapters = [names[i % len(names)] for i in range(args.batch_size)]
    outputs, first_call = {}, {}
    for variant, lm in models.items():  # warm-up: traces and compiles
        start = time.perf_counter()
        outputs[variant] = _generate(variant, lm, x, adapters)
        first_call[variant] = time.perf_counter() - start
    seconds = {variant: [] for variant in VARIANTS}
    for round_ in range(args.rounds):
        order = VARIANTS[round_ % len(VARIANTS) :] + VARIANTS[: round_ % len(VARIANTS)]
        for variant in order:
            start = time.perf_counter()
            tokens = _generate(variant, models[variant], x, adapters)
            seconds[variant].append(time.perf_counter() - start)
            if not np.array_equal(tokens, outputs[variant]):
                raise AssertionError(f"{variant}: greedy generation changed between calls.")
    generated = args.batch_size * args.new_tokens
    ids = np.arange(args.batch_size) % len(names)
    own = ids == served
    new = slice(args.prompt_length, None)
    check = {
        "served_adapter": names[served],
        # The mixed batch's prompts of the served adapter: the unmerged model's tokens exactly.
        "mixed_equals_unmerged_on_its_adapter": bool(
            np.array_equal(outputs["mixed"][own], outputs["unmerged"][own])
        ),
        # Merging changes round-off only: the share of generated tokens that agree.
        "merged_unmerged_token_agreement": float(
            np.mean(outputs["merged"][:, new] == outputs["unmerged"][:, new])
        ),
        "adapters_change_tokens": bool(
            not np.array_equal(outputs["mixed"][~own], outputs["base"][~own])
        ),
    }
    per_variant = {
        variant: {
            "first_call_seconds": first_call[variant],
            "call_seconds": seconds[variant],
            "median_call_seconds": statistics.median(seconds[variant]),
            "tokens_per_second": generated / statistics.median(seconds[variant]),
            # The least disturbed call: on a shared machine, the closest to the variant's own cost.
            "best_tokens_per_second": generated / min(seconds[variant]),
            "jit_compile": bool(models[variant].jit_compile),
        }
        for variant in VARIANTS
    }

    def ratio(a, b):  # a's tokens/s over b's: the median of the per-round ratios
        return statistics.median(tb / ta for ta, tb in zip(seconds[a], seconds[b], strict=True))

    summary = {
        "tokens_per_second": {v: per_variant[v]["tokens_per_second"] for v in VARIANTS},
        "best_tokens_per_second": {v: per_variant[v]["best_tokens_per_second"] for v in VARIANTS},
        "mixed_over_merged": ratio("mixed", "merged"),
        "mixed_over_merged_best": min(seconds["merged"]) / min(seconds["mixed"]),
        "mixed_over_unmerged": ratio("mixed", "unmerged"),
        "unmerged_over_merged": ratio("unmerged", "merged"),
        "merged_over_base": ratio("merged", "base"),
        "goal": "mixed_over_merged >= 0.8",
        "goal_met": ratio("mixed", "merged") >= 0.8,
    }
    return {"variants": per_variant, "check": check, "summary": summary}


def main(args):
    from _multi_lora_common import write_results

    measured = measure(args)
    ranks = list(RANKS[: args.adapters])
    results = {
        "config": {
            **vars(args),
            "ranks": ranks,
            "alphas": [2.0 * r for r in ranks],
            "targets": ["query", "value"],
            "sampler": "greedy",
            "tokens_generated_per_call": args.batch_size * args.new_tokens,
            "mixed_batch_adapters": [i % args.adapters for i in range(args.batch_size)],
        },
        "environment": environment(),
        **measured,
    }
    write_results(args.out, results)
    if not measured["check"]["mixed_equals_unmerged_on_its_adapter"]:
        raise SystemExit("The mixed batch did not generate its adapter's tokens: see 'check'.")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="gpt2_tiny")
    parser.add_argument("--adapters", type=int, default=4, choices=range(1, len(RANKS) + 1))
    parser.add_argument("--batch-size", type=int, default=8, help="prompts in the batch")
    parser.add_argument("--prompt-length", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=7, help="timed calls of each variant")
    parser.add_argument("--out", default=None)
    main(parser.parse_args())
