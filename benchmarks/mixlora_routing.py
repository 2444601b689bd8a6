"""One MixLoRA block at the gpt2_base_en shape: top-k routing against dense routing, interleaved.

`lk.MixLoraFeedForward` computes only the `top_k` chosen experts of each token
(`mixlora_math.top_k_mixture`: full-width tensors `(tokens, k, 3072)`); the
simplest alternative computes every expert and weights the unchosen by zero
(`mixlora_math.dense_mixture`: `(tokens, E, 3072)`). This times a forward and
backward pass (gradients of the router, the experts and the input, as in
training) of one block for each, plus the frozen feed-forward block alone
and MixDoRA's top-k path, in one process on TensorFlow, round-robin so that
noise from other work on the machine falls on every variant alike.

    python benchmarks/mixlora_routing.py                 # batch 4 x 128 tokens, 8 experts, top-2
    python benchmarks/mixlora_routing.py --repeats 30 --out mixlora_routing.json
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def _block(cls, args):
    import keras
    import numpy as np

    from lora_keras.models import GPT2_ARCHITECTURES

    shape = GPT2_ARCHITECTURES["gpt2_base_en"]
    hidden, intermediate = shape["hidden_dim"], shape["intermediate_dim"]
    keras.utils.set_random_seed(args.seed)
    dense_in = keras.layers.Dense(intermediate, activation="gelu")
    dense_in.build((None, hidden))
    dense_out = keras.layers.Dense(hidden)
    dense_out.build((None, intermediate))
    block = cls(dense_in, dense_out, num_experts=args.experts, top_k=args.top_k, rank=args.rank)
    rng = np.random.default_rng(args.seed)
    for variable in (block.expert_in_b, block.expert_out_b):
        variable.assign(rng.normal(0, 0.02, tuple(variable.shape)).astype("float32"))
    return block


def _variants(args):
    """name -> a compiled function computing the gradients of one training pass."""
    import tensorflow as tf

    import lora_keras as lk
    from lora_keras.layers import mixlora_math

    mix, mixdora = _block(lk.MixLoraFeedForward, args), _block(lk.MixDoraFeedForward, args)
    dense_in, dense_out = mix.intermediate_dense, mix.output_dense
    frozen = mixlora_math.FrozenFeedForward(
        dense_in.kernel, dense_in.bias, dense_out.kernel, dense_out.bias, dense_in.activation
    )

    def dense_routing(x):
        _, weights, indices = mixlora_math.top_k_routing(mix.router(x), mix.top_k)
        experts = mix.expert_factors()
        return mixlora_math.dense_mixture(x, weights, indices, frozen, experts, mix.scaling)

    def gradients(forward, variables):
        @tf.function(jit_compile=args.jit_compile)
        def step(x, cotangent):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_sum(forward(x) * cotangent)
            return tape.gradient(loss, [x, *variables])

        return step

    return {
        "frozen FFN only": gradients(lambda x: dense_out(dense_in(x)), []),
        "MixLoRA top-k (kept)": gradients(mix, mix.adapter_weights),
        "MixLoRA dense routing": gradients(dense_routing, mix.adapter_weights),
        "MixDoRA top-k": gradients(mixdora, mixdora.adapter_weights),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4 * 128, help="batch x sequence length")
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--top-k", type=int, default=2)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--jit-compile", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="also write the measurements as JSON here")
    args = parser.parse_args(argv)

    import numpy as np
    import tensorflow as tf

    from lora_keras.experiments.environment import describe_environment
    from lora_keras.io_utils import atomic_write_json

    variants = _variants(args)
    rng = np.random.default_rng(args.seed)
    x = tf.constant(rng.normal(size=(args.tokens, 768)).astype("float32"))
    cotangent = tf.constant(rng.normal(size=(args.tokens, 768)).astype("float32"))
    for step in variants.values():  # trace and compile outside the timing
        step(x, cotangent)
    times = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, step in variants.items():
            start = time.perf_counter()
            [g.numpy() for g in step(x, cotangent) if g is not None]
            times[name].append(time.perf_counter() - start)
    floor = statistics.median(times["frozen FFN only"])
    rows = {}
    for name, seconds in times.items():
        median = statistics.median(seconds)
        rows[name] = {"median_s": median, "times_s": seconds, "vs_frozen_ffn": median / floor}
        print(f"{name:24s} {median * 1e3:9.2f} ms   {median / floor:5.2f}x the frozen FFN")
    if args.out:
        settings = {key: value for key, value in vars(args).items() if key != "out"}
        record = {"settings": settings, "variants": rows, "environment": describe_environment()}
        atomic_write_json(args.out, record)


if __name__ == "__main__":
    main()
