"""Writes the `.keras` and adapter files that tests/test_saved_files.py loads.

Run once per file format, into a folder named after the lora_keras version that wrote it:

    KERAS_BACKEND=tensorflow python tests/data/make_saved_files.py tests/data/saved_0_1_0

Each model is the tests' tiny GPT-2 with every adapter weight set to seeded random values (so the
adapters change the output), saved next to its logits on a fixed batch (`outputs.npz`). Files in
a committed folder are never rewritten: they are what users of that version saved.
"""

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402

import lora_keras as lk  # noqa: E402

TINY_GPT2 = dict(
    vocabulary_size=97,
    num_layers=2,
    num_heads=4,
    hidden_dim=64,
    intermediate_dim=128,
    max_sequence_length=32,
)


def tiny_lm():
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.GPT2Backbone(**TINY_GPT2, dropout=0.0)
    return keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)


def fixed_batch():
    rng = np.random.default_rng(0)
    return {
        "token_ids": rng.integers(0, TINY_GPT2["vocabulary_size"], (2, 12)),
        "padding_mask": np.ones((2, 12), dtype="int32"),
    }


def randomize_trainable(lm, seed):
    """Seeded random values in every trainable weight, so that no adapter is a no-op."""
    rng = np.random.default_rng(seed)
    for variable in lm.trainable_weights:
        values = rng.normal(0.0, 0.05, tuple(variable.shape)) + np.asarray(variable.numpy())
        variable.assign(values.astype(variable.dtype))


def lora(lm):
    lk.apply_lora(lm, rank=2, alpha=8.0, targets=("query", "value", "ffn_in"))


def merged_lora(lm):
    lora(lm)
    randomize_trainable(lm, 1)
    lk.merge_lora(lm)


def dora(lm):
    lk.apply_lora(lm, rank=2, alpha=8.0, targets=("query", "value"), variant="dora")


def nf4(lm):
    lk.quantize_nf4(lm)


def qlora(lm):
    lk.quantize_nf4(lm)
    lk.apply_lora(lm, rank=2, alpha=8.0)


def mixlora(lm):
    lk.apply_mixlora(lm, num_experts=3, top_k=2, rank=2, alpha=4.0)


def mixdora_with_lora(lm):
    lk.apply_mixlora(lm, num_experts=3, top_k=2, rank=2, alpha=4.0, variant="dora")
    lk.apply_lora(lm, rank=2, alpha=8.0)


# name -> (how the model is adapted, whether its adapter file is written too)
MODELS = {
    "lora": (lora, True),
    "merged_lora": (merged_lora, True),
    "dora": (dora, True),
    "nf4": (nf4, False),
    "qlora": (qlora, False),
    "mixlora": (mixlora, True),
    "mixdora_with_lora": (mixdora_with_lora, True),
}


def main(folder):
    os.makedirs(folder, exist_ok=False)
    batch = fixed_batch()
    outputs = {"token_ids": batch["token_ids"]}
    for name, (adapt, with_adapter) in MODELS.items():
        lm = tiny_lm()
        adapt(lm)
        if name != "merged_lora":
            randomize_trainable(lm, 1)
        outputs[name] = np.asarray(lm.predict(batch, verbose=0))
        lm.save(os.path.join(folder, f"{name}.keras"))
        if with_adapter:
            lk.save_adapter(lm, os.path.join(folder, f"{name}.lora.h5"))
    np.savez(os.path.join(folder, "outputs.npz"), **outputs)


if __name__ == "__main__":
    main(sys.argv[1])
