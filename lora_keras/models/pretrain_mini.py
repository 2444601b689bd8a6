"""Pretrains `gpt2_mini` on the embedded corpus less one family; writes the files the package ships.

    python -m lora_keras.models.pretrain_mini                    # into the package's preset folder
    python -m lora_keras.models.pretrain_mini --out /tmp/mini    # anywhere else

It trains a byte-level BPE on the pretraining documents (`corpus_split(GPT2_MINI_HELDOUT_FAMILY)`:
five families, less the documents held out of each), then KerasHub's own `GPT2CausalLM` of shape
`GPT2_ARCHITECTURES["gpt2_mini"]` from random weights drawn with `SEED`, with AdamW, warm-up and
cosine decay, one `train_on_batch` a step on TensorFlow. Every step's loss is recorded;
`tests/test_gpt2_mini.py` runs the first steps again and compares. About 8 minutes on a 2-core CPU.
"""

import argparse
import json
import os
import platform
import sys
import time

import keras
import keras_hub
import numpy as np

from lora_keras.data.corpus_split import HELDOUT_PER_FAMILY, PER_FAMILY, corpus_split
from lora_keras.host import describe_host
from lora_keras.models import shipped_preset
from lora_keras.models.architectures import GPT2_ARCHITECTURES, GPT2_MINI_HELDOUT_FAMILY
from lora_keras.models.tokenizer import train_bpe

PRESET = "gpt2_mini"
SEED = 0
STEPS = 600
BATCH_SIZE = 16
# Covers every pretraining document whole (the longest is 185 tokens, plus start and end).
SEQUENCE_LENGTH = 192
PEAK_LEARNING_RATE = 2e-3
WARMUP_STEPS = 60
WEIGHT_DECAY = 0.01


def pretraining_tokenizer():
    """The tokenizer `gpt2_mini` is trained with: `(vocabulary, merges)` of its BPE."""
    texts = corpus_split(GPT2_MINI_HELDOUT_FAMILY).pretrain
    return train_bpe(texts, GPT2_ARCHITECTURES[PRESET]["vocabulary_size"])


def _batches(tokenizer, seed):
    """Full batches forever, in a fresh seeded order each pass over the documents.

    Each batch is tokenized when it is drawn, so a short run (the test's) reads only its own.
    """
    documents = corpus_split(GPT2_MINI_HELDOUT_FAMILY).pretrain
    preprocessor = keras_hub.models.GPT2CausalLMPreprocessor(
        tokenizer=tokenizer, sequence_length=SEQUENCE_LENGTH
    )
    as_numpy = keras.ops.convert_to_numpy
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(len(documents))
        for start in range(0, len(order) - BATCH_SIZE + 1, BATCH_SIZE):
            rows = order[start : start + BATCH_SIZE]
            x, y, weights = preprocessor([documents[row] for row in rows])
            yield {key: as_numpy(value) for key, value in x.items()}, as_numpy(y), as_numpy(weights)


def pretrain_mini(
    tokenizer, steps=STEPS, seed=SEED, stop_after=None, on_step=None, run_eagerly=False
):
    """Train `gpt2_mini` from random weights; returns `(lm, losses)`, one loss a step.

    Args:
        tokenizer: a `GPT2Tokenizer` with the vocabulary and merges of `pretraining_tokenizer()`.
        steps: int. The length of the schedule (warm-up, then cosine decay to a tenth).
        seed: int. Seeds the initial weights, dropout and the order of the documents.
        stop_after: int or `None`. Stop after this many steps of the same schedule (the test
            runs the first few steps of the real run this way).
        on_step: `None` or a function called with `(step, loss)` after each step.
        run_eagerly: bool. `True` runs the same ops without tracing a graph first (seconds
            saved on a few steps, the same losses to float32 rounding).
    """
    if steps <= WARMUP_STEPS:
        raise ValueError(f"steps must be above the {WARMUP_STEPS} warm-up steps, got {steps}.")
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.GPT2Backbone(**GPT2_ARCHITECTURES[PRESET])
    lm = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0,
        warmup_target=PEAK_LEARNING_RATE,
        warmup_steps=WARMUP_STEPS,
        decay_steps=steps - WARMUP_STEPS,
        alpha=0.1,
    )
    lm.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=WEIGHT_DECAY, global_clipnorm=1.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        weighted_metrics=[],
        run_eagerly=run_eagerly,
    )
    losses = []
    batches = _batches(tokenizer, seed)
    for step in range(steps if stop_after is None else min(stop_after, steps)):
        x, y, weights = next(batches)
        # train_on_batch resets the loss tracker first: each value is that step's own loss.
        losses.append(
            float(lm.train_on_batch(x, y, sample_weight=weights, return_dict=True)["loss"])
        )
        if on_step is not None:
            on_step(step, losses[-1])
    return lm, losses


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(shipped_preset.shipped_folder(PRESET)))
    parser.add_argument("--steps", type=int, default=STEPS)
    args = parser.parse_args(argv)
    if keras.backend.backend() != "tensorflow":
        sys.exit("Pretrain on TensorFlow (KERAS_BACKEND=tensorflow): the recorded losses are.")
    vocabulary, merges = pretraining_tokenizer()
    shipped_preset.write_tokenizer_files(args.out, vocabulary, merges)
    tokenizer = shipped_preset.shipped_tokenizer(PRESET, args.out)
    start = time.perf_counter()

    def report(step, loss):
        if step % 50 == 0 or step == args.steps - 1:
            elapsed = time.perf_counter() - start
            print(f"step {step + 1}/{args.steps}  loss {loss:.4f}  {elapsed:.0f} s", flush=True)

    lm, losses = pretrain_mini(tokenizer, steps=args.steps, on_step=report)
    seconds = time.perf_counter() - start
    lm.backbone.save_weights(os.path.join(args.out, shipped_preset.WEIGHTS_FILE))
    record = {
        "preset": PRESET,
        "architecture": GPT2_ARCHITECTURES[PRESET],
        "tokenizer_tokens": len(vocabulary),
        "heldout_family": GPT2_MINI_HELDOUT_FAMILY,
        "corpus_split": {"heldout_per_family": HELDOUT_PER_FAMILY, "per_family": PER_FAMILY},
        "pretraining_documents": len(corpus_split(GPT2_MINI_HELDOUT_FAMILY).pretrain),
        "seed": SEED,
        "steps": args.steps,
        "batch_size": BATCH_SIZE,
        "sequence_length": SEQUENCE_LENGTH,
        "optimizer": {
            "name": "AdamW",
            "peak_learning_rate": PEAK_LEARNING_RATE,
            "warmup_steps": WARMUP_STEPS,
            "decay": "cosine to a tenth",
            "weight_decay": WEIGHT_DECAY,
            "global_clipnorm": 1.0,
        },
        "seconds": round(seconds, 1),
        "environment": {
            **describe_host(),
            "cpu_count": os.cpu_count(),
            "backend": keras.backend.backend(),
            "keras": keras.__version__,
            "keras_hub": keras_hub.__version__,
            "tensorflow": sys.modules["tensorflow"].__version__,
            "python": platform.python_version(),
        },
        "command": " ".join(["python -m lora_keras.models.pretrain_mini", *(argv or sys.argv[1:])]),
        # Keras's loss of each step: the padding-weighted cross-entropy summed over the batch,
        # divided by all its positions, padding included (the reduction of Keras's losses).
        "losses": losses,
    }
    with open(os.path.join(args.out, shipped_preset.RECORD_FILE), "w", encoding="utf-8") as file:
        json.dump(record, file, indent=1)
        file.write("\n")
    print(f"{args.steps} steps in {seconds:.0f} s; last loss {losses[-1]:.4f}; wrote {args.out}")


if __name__ == "__main__":
    main()
