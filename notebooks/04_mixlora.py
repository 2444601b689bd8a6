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
# # MixLoRA: a mixture of LoRA experts on GPT-2's frozen feed-forward blocks
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/lora-keras/lora-keras/blob/main/notebooks/04_mixlora.ipynb)
#
# **Why.** One LoRA adapter is one small update shared by every token; a mixture of experts gives
# different tokens different weights, but a mixture of full feed-forward copies costs their
# memory many times over. MixLoRA (Li et al., 2024) turns each dense feed-forward block of a
# frozen model into a sparse mixture of experts, cheaply: every expert *shares* the frozen block
# and differs from it only by its own LoRA updates; a small router sends each token to its top-k
# experts. The frozen matmuls run once for all experts, so the model gains capacity for little
# compute.
#
# **What you will see:** the block, drawn as a table of its weights; LoRA on query+value and
# MixLoRA (8 experts, top-2) trained one process each by `lk.compare`; the share of tokens each
# expert got, layer by layer; and the measured cost of MixLoRA against LoRA. Every number comes
# from the objects built here or from the `results.json` the runs write.

# %% tags=["parameters"]
# None: chosen for this runtime by the set-up cell below, which prints each value and why.
PRESET = None  # "gpt2_base_en", the tutorial's; or "gpt2_tiny" (small, for CPUs), or a folder
WEIGHTS = None  # "pretrained" where they can be had, else "random" (offline: same architecture)
DATA = "embedded"  # the corpus that ships with lora_keras; or "reddit_tifu", or a text file
NUM_BATCHES = None  # training steps a run: a longer run on a GPU, a few steps on a CPU
BATCH_SIZE = None  # the tutorial's batch size on a GPU, a smaller one on a CPU
SEQUENCE_LENGTH = 128
RANK = 8  # used by both runs: LoRA on query+value, and every MixLoRA expert
ALPHA = 16.0
NUM_EXPERTS = 8
TOP_K = 2

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

RUNTIME = start_notebook(globals(), gpu={"NUM_BATCHES": 200})

# %% [markdown]
# ## The block, as a table
#
# One MixLoRA block at this preset's shape, built here on the CPU: the frozen `ffn_in` and
# `ffn_out` layers it shares, the float32 router, and every expert's LoRA factors stacked along
# a first axis of `NUM_EXPERTS`. Per token it computes:
#
# 1. `p = softmax(x @ router)`; keep the `TOP_K` largest and renormalise them to sum to 1;
# 2. `x @ W_in` **once**, then for each chosen expert `e`: `a_e = gelu(x W_in + b + s (x A_e) B_e)`;
# 3. `(sum_e w_e a_e) @ W_out` **once**, plus the small `s (a_e A'_e) B'_e` of each chosen expert.

# %%
# The story's imports, after the set-up cell, which chose Keras's backend.
# ruff: noqa: E402
from pathlib import Path

import keras
import numpy as np
from IPython.display import Image, Markdown, display

import lora_keras as lk

shape = lk.GPT2_ARCHITECTURES.get(PRESET, lk.GPT2_ARCHITECTURES["gpt2_base_en"])
ffn_in = keras.layers.Dense(shape["intermediate_dim"], activation="gelu", name="ffn_in")
ffn_in.build((None, shape["hidden_dim"]))
ffn_out = keras.layers.Dense(shape["hidden_dim"], name="ffn_out")
ffn_out.build((None, shape["intermediate_dim"]))
block = lk.MixLoraFeedForward(ffn_in, ffn_out, num_experts=NUM_EXPERTS, top_k=TOP_K, rank=RANK)
trainable = {id(v) for v in block.trainable_weights}
rows = ["| weight | shape | trains | values |", "|---|---|---|---|"]
for variable in block.weights:
    role = "yes" if id(variable) in trainable else "no (frozen or statistics)"
    size = int(np.prod(variable.shape))
    rows.append(f"| `{variable.path}` | {tuple(variable.shape)} | {role} | {size:,} |")
display(Markdown("\n".join(rows)))
print(f"trainable a block: {sum(int(np.prod(v.shape)) for v in block.trainable_weights):,}")

# %% [markdown]
# ## LoRA against MixLoRA, one process each
#
# The same data, seed and optimizer; LoRA on query+value at `RANK`, MixLoRA on every
# feed-forward block. MixLoRA's training loss includes its load-balance term.

# %%
results = lk.compare(
    preset=PRESET,
    weights=WEIGHTS,
    data=DATA,
    modes=("lora", "mixlora"),
    steps=NUM_BATCHES,
    batch_size=BATCH_SIZE,
    sequence_length=SEQUENCE_LENGTH,
    rank=RANK,
    alpha=ALPHA,
    mixlora={"num_experts": NUM_EXPERTS, "top_k": TOP_K, "rank": RANK, "alpha": ALPHA},
)
runs = {run["mode"]: run for run in results["runs"] if run["status"] == "ok"}
for run in results["runs"]:
    if run["status"] != "ok":
        print(f"{run['mode']}: {run['status']} ({run.get('error')})")

# %% [markdown]
# ## Expert loads per layer
#
# The fraction of routed (token, slot) choices each expert got during training, over the
# non-padding tokens. An even share is `1 / NUM_EXPERTS`; the load-balance loss pulls towards
# it. The plot is the one `lk.compare` drew into the report.

# %%
if "mixlora" in runs:
    loads = runs["mixlora"]["expert_loads"]
    rows = ["| layer | " + " | ".join(f"expert {e}" for e in range(NUM_EXPERTS)) + " |"]
    rows.append("|---" * (NUM_EXPERTS + 1) + "|")
    for layer, shares in loads.items():
        rows.append(f"| {layer} | " + " | ".join(f"{share:.3f}" for share in shares) + " |")
    display(Markdown("\n".join(rows)))
    display(Image(filename=str(Path(results["folder"]) / "expert_loads.png")))

# %% [markdown]
# ## What MixLoRA costs against LoRA
#
# Step time (median of the steady steps), peak memory and where it was measured, and trainable
# weights, all from `results.json`.

# %%
if {"lora", "mixlora"} <= runs.keys():
    lora, mix = runs["lora"], runs["mixlora"]
    rows = ["| | LoRA (query+value) | MixLoRA | MixLoRA / LoRA |", "|---|---|---|---|"]
    for label, key, show in (
        ("step time", "step_time_s", lambda v: f"{v * 1000:.1f} ms"),
        ("peak memory", "peak_memory_bytes", lk.format_bytes),
        ("trainable weights", "trainable_params", lambda v: f"{v:,}"),
    ):
        ratio = mix[key] / lora[key] if lora[key] else float("nan")
        rows.append(f"| {label} | {show(lora[key])} | {show(mix[key])} | {ratio:.2f}x |")
    display(Markdown("\n".join(rows)))
    print("memory measured as:", mix["memory_source"])
    print("report:", Path(results["folder"]) / "report.md")
