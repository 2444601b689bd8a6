# ---
# jupyter:
#   accelerator: GPU
#   colab:
#     provenance: []
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: accelerator,colab
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Many adapters on one frozen GPT-2: four tasks, one `fit`, one mixed batch
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/lora-keras/lora-keras/blob/main/notebooks/06_many_adapters.ipynb)
#
# **Why.** A LoRA adapter is small; the frozen model under it is not. A workshop that wants one
# adapter per task, or per student, and trains them one model at a time pays for a frozen model
# each time. m-LoRA (Ye et al., 2023, "m-LoRA: How to Efficiently Fine-Tune Dozens of Large
# Language Models on a Single GPU") trains several adapters at once on one shared frozen model,
# and serving systems (S-LoRA, Punica, LoRAX) answer a batch whose requests each name their own
# adapter. This notebook does both with Keras: the frozen model runs once for the whole batch,
# and each sequence's update comes from its own adapter only.
#
# **What you will see:** one frozen GPT-2 holding four adapters, one per family of the corpus
# lora_keras ships (weather reports, match reports, nature diaries, letters); the four trained
# together in one `fit`, each with its own loss in the history; the memory they share, drawn
# against four separate jobs; and one batch of prompts generating in each family's style, each
# prompt with its own adapter. Every number comes from the objects built here.

# %% tags=["parameters"]
# None: chosen for this runtime by the set-up cell below, which prints each value and why.
PRESET = "gpt2_mini"  # pretrained by lora_keras, shipped, offline; or "gpt2_base_en" on Colab
WEIGHTS = None  # "pretrained" where they can be had, else "random"
DATA = "embedded"  # the corpus lora_keras ships: its families are the tasks
FAMILIES = ("weather", "match", "nature", "letter")  # one adapter each; "recipe": see the end
NUM_BATCHES = None  # training steps; each holds BATCH_SIZE documents of every family
BATCH_SIZE = None  # documents of each family a step: the batch is 4 times larger
SEQUENCE_LENGTH = 128
LEARNING_RATE = 3e-3
RANK = 4  # every adapter's (each may have its own: `{"rank": r}` in its settings)
ALPHA = 16.0
MAX_GENERATION_LENGTH = 48  # tokens a generated text, prompt included
SEED = 0  # the same random base in every model built here, where WEIGHTS="random"

# %%
# Set-up: install lora_keras where it is missing (Colab), then fill in the settings left None.
import importlib.util
import os
import subprocess
import sys

if not importlib.util.find_spec("lora_keras"):  # LORA_KERAS_SOURCE: a git URL or a checkout
    source = os.environ.get("LORA_KERAS_SOURCE", "git+https://github.com/lora-keras/lora-keras")
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", source])
    importlib.invalidate_caches()
from lora_keras.notebook import start_notebook

RUNTIME = start_notebook(
    globals(),
    gpu={"NUM_BATCHES": 150, "BATCH_SIZE": 4},
    cpu={"NUM_BATCHES": 150, "BATCH_SIZE": 4},
    trains_here=True,  # this notebook trains in its own process: the GPU stays visible here
)

# %% [markdown]
# ## One frozen model, four adapters
#
# `lk.apply_multi_lora` puts several named adapters on the same layers of one frozen model.
# Its inputs gain `adapter_ids`, one integer a sequence: the position of that sequence's adapter
# in the dict. Each wrapped layer computes the frozen product once for the whole batch, then
# adds to each sequence the low-rank update of its own adapter (`A` and `B` picked by its id).

# %%
# The story's imports, after the set-up cell, which chose Keras's backend.
# ruff: noqa: E402
import math
import tempfile
from pathlib import Path

import keras
import matplotlib.pyplot as plt
import numpy as np

import lora_keras as lk


def frozen_model():
    """The base model, the same each time it is built (random weights drawn from SEED)."""
    keras.utils.set_random_seed(SEED)
    return lk.load_gpt2(PRESET, weights=WEIGHTS, sequence_length=SEQUENCE_LENGTH)


lm = frozen_model()
lk.apply_multi_lora(lm, {family: {"rank": RANK, "alpha": ALPHA} for family in FAMILIES})
print(f"{PRESET} ({WEIGHTS} weights) with adapters {lk.adapter_names(lm)}")
print(lk.format_trainable_summary(lm))
query = lk.multi_lora_layers(lm)["transformer_layer_0/query"]
shape = tuple(query.lora_kernel_a.shape)
print(f"one layer's A, every adapter's stacked: {shape} (adapters, hidden, rank)")

# %% [markdown]
# ## Four tasks, one `fit`
#
# Each family's documents become batches as for any fine-tuning (`lk.make_lm_datasets`, a few
# batches of each held out of this `fit`, though `gpt2_mini`'s pretraining, which covered these
# families, may have seen some of them). `lk.mixed_batches` puts the `i`-th batch of every
# family side by side in one step, with the `adapter_ids` of each sequence, and with
# `lk.adapter_sample_weight` as the sample weights: they make the batch's loss the *sum* of each
# adapter's mean loss, so each adapter gets the gradient its own run on its own batches would
# get, however many sequences the others have.
#
# During `fit`, the model logs each adapter's mean loss on its own tokens beside the batch's
# loss: `loss_weather`, `loss_match`, ... and, on the held-out batches, `val_loss_weather`, ....
# The optimizer is plain Adam: a global gradient-norm clip or weight decay would tie the adapters
# together (one adapter's large gradient would shrink the others' steps).

# %%
VALIDATION_BATCHES = 2  # of each family, held out of training
train, held_out = {}, {}
for family in FAMILIES:
    texts = lk.load_texts(f"{DATA}:{family}")
    train[family], held_out[family] = lk.make_lm_datasets(
        texts,
        lm,
        batch_size=BATCH_SIZE,
        num_batches=NUM_BATCHES,
        validation_batches=VALIDATION_BATCHES,
    )
train, held_out = lk.mixed_batches(lm, train), lk.mixed_batches(lm, held_out)

lm.compile(
    optimizer=keras.optimizers.Adam(LEARNING_RATE),
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
)
EVALUATIONS = min(NUM_BATCHES, 10)  # held-out losses measured during training, evenly spaced
steps = NUM_BATCHES // EVALUATIONS
with lk.preprocessor_detached(lm):
    before = lm.evaluate(held_out, verbose=0, return_dict=True)  # every B is 0: the base model
    history = lm.fit(
        train,
        validation_data=held_out,
        epochs=EVALUATIONS,
        steps_per_epoch=steps,
        shuffle=False,
        verbose=0,
    ).history
print(
    f"{EVALUATIONS * steps} steps of {len(FAMILIES)} x {BATCH_SIZE} sequences of {SEQUENCE_LENGTH} "
    "tokens in one fit. Each adapter's held-out loss, before -> after:"
)
for family in FAMILIES:
    print(
        f"  {family:<8} {before[f'loss_{family}']:.3f} -> {history[f'val_loss_{family}'][-1]:.3f}"
    )

# %%
figure, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True, layout="constrained")
seen = [steps * (epoch + 1) for epoch in range(EVALUATIONS)]
for family in FAMILIES:
    (line,) = axes[0].plot(seen, history[f"loss_{family}"], marker=".", label=family)
    held_out_losses = [before[f"loss_{family}"], *history[f"val_loss_{family}"]]
    axes[1].plot([0, *seen], held_out_losses, marker=".", color=line.get_color(), label=family)
axes[0].set_title("training loss of each adapter (mean over each round of steps)")
axes[1].set_title("held-out loss of each adapter")
for axis in axes:
    axis.set_xlabel("training steps (each one batch of every family)")
    axis.legend()
axes[0].set_ylabel("next-token cross-entropy (nats)")
plt.show()

# %% [markdown]
# ## What the four share, against four separate jobs
#
# The same four adapters trained one at a time, or side by side as four jobs, need four frozen
# models. Below, each adapter is saved (`lk.save_adapter(..., adapter=NAME)` writes the file a
# single-adapter model loads) and loaded into a model of its own, and both sides are counted:
# the bytes their weights hold, read from their variables, and the training peak that
# `lk.estimate_for_model` predicts for one step from the model as it is (weights, gradients,
# optimizer state, activations, and what this backend holds beside them, as the package's
# planner models it; not the process's own runtime): the shared model on the mixed batch, each
# separate model on its own family's batch. Each separate model also generates, for the
# comparison at the end.

# %%
PROMPT = ""  # no prompt, only the start token: each adapter chooses how its text begins


def adapter_bytes(model):
    """Bytes of the model's trainable weights (its adapters), read from its variables."""
    return sum(math.prod(w.shape) * np.dtype(w.dtype).itemsize for w in model.trainable_weights)


def weight_bytes(model):
    """(frozen, adapters): the bytes a model's weights hold, each variable once."""
    adapters = adapter_bytes(model)
    return lk.stored_weight_bytes(model) - adapters, adapters


together = {
    "weights": weight_bytes(lm),
    "estimate": lk.estimate_for_model(lm, len(FAMILIES) * BATCH_SIZE, SEQUENCE_LENGTH),
}
separate = {"weights": [], "estimate": []}
alone_texts = {}
folder = Path(tempfile.mkdtemp())
for family in FAMILIES:  # one separate model at a time, so only one is ever held here
    lk.save_adapter(lm, folder / f"{family}.lora.h5", adapter=family)
    alone = frozen_model()
    lk.load_adapter(alone, folder / f"{family}.lora.h5")
    separate["weights"].append(weight_bytes(alone))
    separate["estimate"].append(lk.estimate_for_model(alone, BATCH_SIZE, SEQUENCE_LENGTH))
    alone.compile(sampler="greedy")
    alone_texts[family] = alone.generate(PROMPT, max_length=MAX_GENERATION_LENGTH)
    del alone

frozen, adapters = together["weights"]
apart = [sum(pair) for pair in separate["weights"]]
size = lk.format_bytes
print("Weights held, read from the models' variables:")
print(f"  one model, {len(FAMILIES)} adapters: frozen {size(frozen)} + adapters {size(adapters)}")
print(
    f"  {len(FAMILIES)} separate models: {' + '.join(size(b) for b in apart)} = {size(sum(apart))}"
)
print(f"  separate / shared: {sum(apart) / (frozen + adapters):.2f}x")

# %%
components = [name for name in together["estimate"] if name != "total"]
bars = {
    f"{len(FAMILIES)} adapters, one model": {c: together["estimate"][c] for c in components},
    f"{len(FAMILIES)} separate jobs": {
        c: sum(estimate[c] for estimate in separate["estimate"]) for c in components
    },
}
figure, axis = plt.subplots(figsize=(8, 4), layout="constrained")
bottoms = np.zeros(len(bars))
for component in components:
    heights = np.array([parts[component] for parts in bars.values()]) / 2**20
    axis.bar(list(bars), heights, bottom=bottoms, label=component)
    bottoms += heights
axis.set_ylabel("estimated training peak (MiB)")
axis.set_title(f"{PRESET}, {len(FAMILIES)} x {BATCH_SIZE} x {SEQUENCE_LENGTH} tokens a step")
axis.legend(loc="upper left", fontsize="small")
plt.show()
shared, apart = (sum(parts.values()) for parts in bars.values())
print(
    f"Estimated training peak ({keras.config.backend()} backend): {size(shared)} for the shared "
    f"model, {size(apart)} for the separate ones; shared / separate: {shared / apart:.2f}x"
)

# %% [markdown]
# Read the bars component by component. The activations are the same on both sides: the shared
# model's batch holds every family's sequences, so sharing does not shrink them. What the
# separate jobs repeat is what each holds whatever its batch: its frozen weights, and the part of
# the backend's share that does not grow with the batch (large for some backends, small for
# others: run this notebook on JAX, as notebooks/README.md says, to see). So the larger the
# frozen model is against one batch's activations, the more sharing saves: GPT-2 base more than
# `gpt2_mini` (set `PRESET` to see it), a 7B model more still. The bars are an estimate; `python
# benchmarks/multi_lora_together.py` measures the peaks of adapters trained together and one
# after another, each in its own process.

# %% [markdown]
# ## One batch, four styles
#
# `lk.generate` takes one adapter name per prompt: here the same (empty) prompt four times, each
# with another family's adapter, in one batch, so the frozen model runs once for all four.
# Greedy decoding makes each result the one its adapter gives alone in its own model, which the
# separate models above generated: the label of each text checks it.

# %%
lm.compile(sampler="greedy")
prompts = [PROMPT] * len(FAMILIES)
mixed = lk.generate(lm, prompts, adapters=list(FAMILIES), max_length=MAX_GENERATION_LENGTH)
for family, text in zip(FAMILIES, mixed, strict=True):
    same = "same as alone" if text == alone_texts[family] else "DIFFERS from alone"
    print(f"[{family} adapter, {same}]\n{text}\n")

# %% [markdown]
# ## What to take away
#
# - **One `fit`, several jobs.** Each adapter trains on its own sequences, with its own loss in
#   the history; an adapter whose sequences are missing from a batch gets no gradient from it.
# - **Sharing saves what each job holds whatever its batch, not the activations**: the frozen
#   model, once instead of four times. How much that is depends on the frozen model's size
#   against one batch's activations.
# - **Serving mixes adapters in one batch**, each prompt's result the one its adapter gives
#   alone (greedy): one base model can answer many tasks at once.
# - **A family the base never saw learns slowly.** `gpt2_mini` was pretrained on every family
#   but recipes; put "recipe" in `FAMILIES` and its adapter's loss starts far higher than the
#   others' and needs many more steps (notebook 05 measures that on its own): the per-adapter
#   losses show it where the batch's loss would hide it.
# - With `WEIGHTS="random"` (as the tests run this notebook) the texts are noise: the run checks
#   that everything works, not what it says.
