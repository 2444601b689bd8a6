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
# # QLoRA and DoRA: a 4-bit frozen model, and LoRA split into magnitude and direction
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/lora-keras/lora-keras/blob/main/notebooks/03_qlora_and_dora.ipynb)
#
# **Why.** Once LoRA has removed the gradients and optimizer state of the frozen model, the
# frozen weights themselves are much of what is left in memory:
# [QLoRA](https://arxiv.org/abs/2305.14314) (Dettmers et al., 2023) stores them in 4 bits and
# trains LoRA beside them. And LoRA's update moves a weight's length and direction together,
# where full fine-tuning moves them apart: [DoRA](https://arxiv.org/abs/2402.09353) (Liu et al.,
# 2024) trains a magnitude per output unit on top of LoRA's update of the direction. Both are
# variants of the same LoRA wrapper, each from a paper with an exact definition.
#
# **What you will see:** QLoRA's NormalFloat-4 code book against the normal distribution's
# quantiles and a uniform 4-bit grid; how far a real GPT-2 kernel moves when stored in it; what
# double quantization saves; DoRA's magnitude and direction on the same model; then full
# fine-tuning, LoRA, QLoRA and DoRA trained on this runtime, each in its own process, with the
# memory and time each took, side by side. Every number below is computed or measured in this
# session; none is typed into the text.

# %% tags=["parameters"]
# None: chosen for this runtime by the set-up cell below, which prints each value and why.
PRESET = None  # "gpt2_base_en", the tutorial's; or "gpt2_tiny" (small, for CPUs), or a folder
WEIGHTS = None  # "pretrained" where they can be had, else "random" (offline: same architecture)
DATA = "embedded"  # the corpus that ships with lora_keras; or "reddit_tifu", or a text file
NUM_BATCHES = None  # training steps a run: a short run on a GPU, a few steps on a CPU
BATCH_SIZE = None  # the tutorial's batch size on a GPU, a smaller one on a CPU
SEQUENCE_LENGTH = 128
RANK = 4
ALPHA = 32.0
BLOCK_SIZE = 64  # NF4 block size, as in the QLoRA paper
SEED = 0

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

# Peak memory and step time settle within a few steps: a short run on a GPU.
RUNTIME = start_notebook(globals(), gpu={"NUM_BATCHES": 50})

# %% [markdown]
# ## QLoRA's code book: NormalFloat-4
#
# A 4-bit code has 16 values. Pretrained weights are close to normally distributed, so QLoRA
# places its 16 values at quantiles of the standard normal, scaled to [-1, 1]: 7 negative, an
# exact zero (so zero weights and padding stay exact), and 8 positive. Each block of
# `BLOCK_SIZE` weights is divided by its largest magnitude (its *absmax*), and every weight is
# stored as the index of its nearest code value. Against the plain normal quantiles of 16 equal
# slices, NF4 trades symmetry for the exact zero; against a uniform grid it spends its values
# where weights are dense, near zero, and few in the tails.

# %%
# The story's imports, after the set-up cell, which chose Keras's backend.
# ruff: noqa: E402
import statistics
from pathlib import Path

import keras
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Image, Markdown, display

import lora_keras as lk

nf4 = np.asarray(lk.NF4_VALUES, dtype="float64")
normal = statistics.NormalDist()
# The plain alternative: the centres of 16 equally likely slices of the normal, scaled to [-1, 1].
normal_quantiles = np.array([normal.inv_cdf((i + 0.5) / 16) for i in range(16)])
normal_quantiles /= np.abs(normal_quantiles).max()
uniform = np.linspace(-1.0, 1.0, 16)  # a uniform 4-bit grid over the same range

figure, axis = plt.subplots(figsize=(8, 4))
index = np.arange(16)
axis.plot(index, uniform, "s-", label="uniform 4-bit grid", alpha=0.7)
axis.plot(index, normal_quantiles, "^-", label="normal quantiles (16 equal slices)", alpha=0.7)
axis.plot(index, nf4, "o-", label="NF4 (QLoRA)", linewidth=2)
axis.axhline(0.0, color="grey", linewidth=0.5)
axis.set_xlabel("4-bit code")
axis.set_ylabel("value, in units of the block's absmax")
axis.set_title("The 16 values of three 4-bit code books")
axis.legend()
plt.show()
print("NF4 values:", np.array2string(nf4, precision=4, separator=", "))
signs = {"negative": nf4 < 0, "zero": nf4 == 0, "positive": nf4 > 0}
print(", ".join(f"{name}: {int(mask.sum())}" for name, mask in signs.items()))

# %% [markdown]
# ## The quantization error of a real kernel
#
# The first block's feed-forward input kernel of the model of this session, stored in NF4 and
# read back, against the same blocks rounded to the uniform grid above. With pretrained weights
# the weights are close to normal and NF4's placement pays; random weights follow whatever
# distribution their initializer draws, so the two grids fare closer.

# %%
keras.utils.set_random_seed(SEED)
gpt2_lm = lk.load_gpt2(PRESET, weights=WEIGHTS, sequence_length=SEQUENCE_LENGTH)
KERNEL_PATH = "transformer_layer_0/feedforward_intermediate_dense/kernel"
kernel = next(v for v in gpt2_lm.backbone.weights if v.path == KERNEL_PATH)
weights = keras.ops.convert_to_numpy(kernel).astype("float32")
print(f"{KERNEL_PATH}: shape {weights.shape}, {weights.size:,} weights ({WEIGHTS} weights)")

quantized = lk.nf4_quantize(weights, block_size=BLOCK_SIZE, double_quant=True)
nf4_restored = keras.ops.convert_to_numpy(lk.nf4_dequantize(quantized)).reshape(weights.shape)


def uniform_round_trip(values, block_size):
    """Blocks scaled by their absmax, each value rounded to the nearest point of `uniform`."""
    blocks = values.reshape(-1, block_size)
    absmax = np.abs(blocks).max(axis=1, keepdims=True)
    nearest = np.abs(blocks[..., None] / absmax[..., None] - uniform).argmin(axis=-1)
    return (uniform[nearest] * absmax).reshape(values.shape)


uniform_restored = uniform_round_trip(weights, BLOCK_SIZE)
spread = np.sqrt(np.mean(weights**2))
rows = ["| code book | RMS error | RMS error / RMS weight | largest error |", "|---|---|---|---|"]
for name, restored in (("NF4", nf4_restored), ("uniform 4-bit", uniform_restored)):
    error = restored - weights
    rms = np.sqrt(np.mean(error**2))
    rows.append(f"| {name} | {rms:.3g} | {rms / spread:.2%} | {np.abs(error).max():.3g} |")
display(Markdown("\n".join(rows)))

blocks = weights.reshape(-1, BLOCK_SIZE)
scaled = (blocks / np.abs(blocks).max(axis=1, keepdims=True)).ravel()
figure, axis = plt.subplots(figsize=(8, 3.5))
axis.hist(scaled, bins=120, density=True, color="lightgrey", label="weights / block absmax")
for value in nf4:
    axis.axvline(value, color="tab:green", linewidth=1)
axis.plot([], [], color="tab:green", label="NF4 values")
axis.set_xlabel("weight, in units of its block's absmax")
axis.set_ylabel("density")
axis.set_title(f"{KERNEL_PATH}: where the weights fall, where NF4 puts its values")
axis.legend()
plt.show()

# %% [markdown]
# ## What double quantization saves
#
# Each block of `BLOCK_SIZE` 4-bit codes also needs its absmax: a float32 constant, half a bit
# per weight at blocks of 64. QLoRA's double quantization stores those constants again, in 8
# bits, in blocks of 256 after subtracting their mean, with one float32 constant per block of
# constants. `nbytes` is what each quantized tensor occupies; scaled to every kernel of the
# transformer blocks (what `lk.quantize_nf4` stores in NF4; embeddings and layer norms stay):

# %%
plain = lk.nf4_quantize(weights, block_size=BLOCK_SIZE, double_quant=False)
block_kernels = sum(
    int(np.prod(v.shape))
    for v in gpt2_lm.backbone.weights
    if v.path.startswith("transformer_layer_") and v.path.endswith("/kernel")
)
rows = ["| storage | bits per weight | this kernel | all block kernels |", "|---|---|---|---|"]
for name, nbytes in (
    ("float32", weights.size * 4),
    ("NF4, absmax in float32", plain.nbytes),
    ("NF4, double-quantized absmax", quantized.nbytes),
):
    bits = 8 * nbytes / weights.size
    rows.append(
        f"| {name} | {bits:.3f} | {lk.format_bytes(nbytes)} | "
        f"{lk.format_bytes(bits * block_kernels / 8)} |"
    )
display(Markdown("\n".join(rows)))
saved = (plain.nbytes - quantized.nbytes) / weights.size * 8
print(f"double quantization saves {saved:.3f} bits per weight, {block_kernels:,} block weights")

# %% [markdown]
# ## DoRA: a magnitude and a direction per output unit
#
# DoRA writes the adapted kernel as a magnitude times a direction, one of each per output unit
# (a column of a `d_in x d_out` kernel):
#
# `W' = m * V / ||V||`, with `V = W + (alpha / r) * A B`
#
# LoRA's `A B` now only turns the direction `V / ||V||`; the trainable magnitude `m`, initialised
# to the frozen kernel's column norms `||W||`, sets each column's length. At the start `W' = W`,
# a no-op as in LoRA. The norm is detached from the gradient (the paper's section 4.3), so the
# backward pass keeps no kernel-sized tensor. Applied with `variant="dora"`:

# %%
tokens = {
    "token_ids": np.arange(2 * 16).reshape(2, 16) % gpt2_lm.backbone.vocabulary_size,
    "padding_mask": np.ones((2, 16), "int32"),
}
base_logits = keras.ops.convert_to_numpy(gpt2_lm(tokens))
lk.apply_lora(gpt2_lm, rank=RANK, alpha=ALPHA, targets=("query", "value"), variant="dora")
dora_logits = keras.ops.convert_to_numpy(gpt2_lm(tokens))
print(f"largest change of the logits at initialisation: {np.abs(dora_logits - base_logits).max()}")

layers = lk.lora_layers(gpt2_lm)
magnitudes = sum(int(np.prod(layer.magnitude.shape)) for layer in layers.values())
for path in list(layers)[:2]:
    layer = layers[path]
    print(
        f"{path}: kernel {tuple(layer.original_layer.kernel.shape)}, A "
        f"{tuple(layer.lora_kernel_a.shape)}, B {tuple(layer.lora_kernel_b.shape)}, magnitude "
        f"{tuple(layer.magnitude.shape)}"
    )
counts = lk.trainable_summary(gpt2_lm)
print(
    f"DoRA: {lk.format_trainable_summary(gpt2_lm)}: LoRA's "
    f"{counts['trainable'] - magnitudes:,} factor weights and {magnitudes:,} magnitudes"
)
dora_estimate = lk.estimate_for_model(gpt2_lm, BATCH_SIZE, SEQUENCE_LENGTH)
print("What DoRA adds to a training step's memory, estimated for these settings:")
print(" -", lk.explain_estimate(dora_estimate)[-1])
del gpt2_lm

# %% [markdown]
# ## Full fine-tuning, LoRA, QLoRA and DoRA, one process each
#
# `lk.compare` trains each mode on the same data, seed and optimizer in a fresh process, so one
# run's peak memory and compiled graphs never leak into the next, and saves its results as soon
# as it ends. `qlora` stores the block kernels in NF4 (`lk.quantize_nf4`) and dequantizes them on
# the fly in every step; `dora` is LoRA with magnitudes.

# %%
results = lk.compare(
    preset=PRESET,
    weights=WEIGHTS,
    data=DATA,
    modes=("full", "lora", "qlora", "dora"),
    steps=NUM_BATCHES,
    batch_size=BATCH_SIZE,
    sequence_length=SEQUENCE_LENGTH,
    rank=RANK,
    alpha=ALPHA,
    seed=SEED,
)
print("\nresults:", results["folder"])

# %% [markdown]
# ## Side by side
#
# Stored weights are the model's weights as the run kept them (NF4 block kernels for QLoRA),
# beside the training peak and the step time. The peak's source is named in the table: on a GPU
# the allocator's peak, on a CPU the whole process's resident memory, runtime included.

# %%
runs = {run["mode"]: run for run in results["runs"] if run["status"] == "ok"}
for run in results["runs"]:
    if run["status"] != "ok":
        print(f"{run['mode']}: {run['status']} ({run.get('error')}), left out below")

rows = [
    "| mode | trainable weights | stored weights | peak memory | estimated | step time "
    "(median) | vs LoRA |",
    "|---|---|---|---|---|---|---|",
]
for mode, run in runs.items():
    versus = run["step_time_s"] / runs["lora"]["step_time_s"] if "lora" in runs else None
    rows.append(
        f"| {mode} | {run['trainable_params']:,} | {lk.format_bytes(run['stored_weight_bytes'])} "
        f"| {lk.format_bytes(run['peak_memory_bytes'])} | "
        f"{lk.format_bytes(run['estimated_memory_bytes'])} | {run['step_time_s'] * 1000:.1f} ms "
        f"| {'' if versus is None else f'{versus:.2f}x'} |"
    )
display(Markdown("\n".join(rows)))
print("peak memory measured as:", next(iter(runs.values()))["memory_source"] if runs else "-")

if runs:
    modes = list(runs)
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    panels = (
        ("stored weights (MiB)", [runs[m]["stored_weight_bytes"] / 2**20 for m in modes]),
        ("peak memory (MiB)", [runs[m]["peak_memory_bytes"] / 2**20 for m in modes]),
        ("median step time (ms)", [runs[m]["step_time_s"] * 1000 for m in modes]),
    )
    for axis, (label, values) in zip(axes, panels, strict=True):
        axis.bar(
            modes, values, color=["tab:grey", "tab:blue", "tab:green", "tab:orange"][: len(modes)]
        )
        axis.set_ylabel(label)
        axis.set_title(label.split(" (")[0])
    figure.suptitle(f"{PRESET}, batch {BATCH_SIZE} x {SEQUENCE_LENGTH} tokens, {RUNTIME.device}")
    figure.tight_layout()
    plt.show()

# %% [markdown]
# ### What each variant costs and saves against LoRA
#
# QLoRA's saving is in the stored weights and, through them, the peak; its cost is the
# dequantization of every frozen kernel in every step, forward and backward. DoRA's cost is the
# norm of `V` rebuilt every step, the scaling of each output, and the magnitudes' gradient.

# %%
for mode in ("qlora", "dora"):
    if {mode, "lora"} <= runs.keys():
        run, lora = runs[mode], runs["lora"]
        print(
            f"{mode} against LoRA: step time {run['step_time_s'] / lora['step_time_s']:.2f}x, "
            f"peak {lk.format_bytes(run['peak_memory_bytes'] - lora['peak_memory_bytes'])} more "
            f"({run['peak_memory_bytes'] / lora['peak_memory_bytes']:.2f}x), stored weights "
            f"{run['stored_weight_bytes'] / lora['stored_weight_bytes']:.2f}x"
        )
if {"qlora", "full"} <= runs.keys():
    ratio = runs["qlora"]["stored_weight_bytes"] / runs["full"]["stored_weight_bytes"]
    print(f"QLoRA's stored weights against the float model's: {ratio:.2f}x")

# %% [markdown]
# The report `lk.compare` wrote beside `results.json` has the loss curves and the memory over the
# steps; `lora-keras report FOLDER` redraws it from `results.json` alone. The same comparison
# from the command line (on Colab, prefix it with `!`):

# %%
for name in ("memory.png", "step_time.png"):
    plot = Path(results["folder"]) / name
    if plot.exists():
        display(Image(filename=str(plot)))
print(
    f"lora-keras compare --preset {PRESET} --weights {WEIGHTS} --data {DATA} "
    f"--modes full,lora,qlora,dora --steps {NUM_BATCHES} --batch-size {BATCH_SIZE} "
    f"--sequence-length {SEQUENCE_LENGTH} --rank {RANK} --alpha {ALPHA}"
)
