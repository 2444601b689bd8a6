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
# # Parameter-efficient fine-tuning of GPT-2 with LoRA
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/lora-keras/lora-keras/blob/main/notebooks/01_lora_gpt2_walkthrough.ipynb)
#
# **Why LoRA.** Fine-tuning every weight of a large model needs, for each weight, a gradient and
# AdamW's two moment estimates: four copies of the model in memory. LoRA
# ([Hu et al., 2021](https://arxiv.org/abs/2106.09685)) freezes the pretrained model and learns
# each update as a product of two thin matrices, so only a small fraction of the weights train,
# and the result is saved as a file a small fraction of the model's size.
#
# **What you will see:** GPT-2 fine-tuned twice on the same data, every weight and then LoRA
# adapters only, with the time and memory each took on *this* runtime, then the adapters merged
# for inference at the base model's cost and saved as a file.
#
# This is the story of the keras.io tutorial
# [Parameter-efficient fine-tuning of GPT-2 with LoRA](https://keras.io/examples/nlp/parameter_efficient_finetuning_of_gpt2_with_lora/),
# told with the `lora_keras` package instead of code pasted into cells. Every number printed below
# is computed or measured in this session; none is typed into the text.

# %% tags=["parameters"]
# None: chosen for this runtime by the set-up cell below, which prints each value and why.
PRESET = None  # "gpt2_base_en", the tutorial's; or "gpt2_tiny" (small, for CPUs), or a folder
WEIGHTS = None  # "pretrained" where they can be had, else "random" (offline: same architecture)
DATA = None  # "reddit_tifu" (the tutorial's) on Colab when online, else "embedded" (no download)
NUM_BATCHES = None  # training steps: the tutorial's number on a GPU, a few on a CPU
BATCH_SIZE = None  # the tutorial's batch size on a GPU, a smaller one on a CPU
SEQUENCE_LENGTH = 128  # tokens per training sequence, as in the tutorial
RANK = 4  # LoRA rank, as in the tutorial
ALPHA = 32.0  # LoRA scaling numerator: the update is scaled by ALPHA / RANK
LEARNING_RATE = 5e-5
MAX_GENERATION_LENGTH = None  # tokens a generated text: the tutorial's on a GPU, fewer on a CPU
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

RUNTIME = start_notebook(
    globals(),
    gpu={"MAX_GENERATION_LENGTH": 200},  # the tutorial's
    cpu={"MAX_GENERATION_LENGTH": 64},
    trains_here=True,  # this notebook trains in its own process: the GPU stays visible here
)

# %% [markdown]
# ## LoRA's arithmetic
#
# LoRA freezes the pretrained kernel `W` (`d_in x d_out`) and learns its update as the product of
# `A` (`d_in x r`) and `B` (`r x d_out`), for a small rank `r`:
#
# `y = x W + (alpha / r) * x A B`
#
# Instead of `d_in * d_out` trainable weights, a projection has `r * (d_in + d_out)`. `B` starts at
# zero, so training starts from exactly the pretrained model. Here is the arithmetic for the model
# of this session, from its own shapes:

# %%
# The story's imports, after the set-up cell, which chose Keras's backend.
# ruff: noqa: E402
import gc
import inspect
import tempfile
import time

import keras
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display

import lora_keras as lk

keras.utils.set_random_seed(SEED)
gpt2_lm = lk.load_gpt2(PRESET, weights=WEIGHTS, sequence_length=SEQUENCE_LENGTH)
for key, value in gpt2_lm.provenance.items():
    print(f"{key:>10}: {value}")


def lora_arithmetic(name, hidden_dim, rank):
    """A hidden x hidden projection (query, value) against its LoRA factors, from the shapes."""
    full, lora = hidden_dim * hidden_dim, rank * (hidden_dim + hidden_dim)
    print(
        f"{name}: a {hidden_dim}x{hidden_dim} projection has {full:,} weights; "
        f"LoRA at rank {rank} trains {rank}x{hidden_dim} + {rank}x{hidden_dim} = {lora:,} "
        f"({full / lora:,.0f}x fewer)"
    )


lora_arithmetic(PRESET, gpt2_lm.backbone.hidden_dim, RANK)
if PRESET != "gpt2_base_en":  # the tutorial's model, from the table of GPT-2 shapes
    lora_arithmetic("gpt2_base_en", lk.GPT2_ARCHITECTURES["gpt2_base_en"]["hidden_dim"], RANK)
print("Whole model, every weight trainable:", lk.format_trainable_summary(gpt2_lm))

# %% [markdown]
# ## The data
#
# The tutorial fine-tunes on the documents of TFDS's `reddit_tifu`. Offline (CI, many workshop
# rooms) the same code trains on a corpus shipped inside the package. The set-up cell chose one;
# if a download fails anyway, we fall back to the embedded corpus and say so. The texts are
# tokenized once, up front, so the timed steps measure the model and not the tokenizer.

# %%
try:
    texts = lk.load_texts(DATA)
except Exception as error:  # a TFDS download that fails: keep going offline, loudly
    print(f"Could not load {DATA!r} ({type(error).__name__}: {error}).")
    print("Falling back to the embedded corpus.")
    DATA, texts = "embedded", lk.load_texts("embedded")

documents = int(texts.cardinality())
print(f"data: {DATA}, {documents:,} documents")
if 0 < documents < NUM_BATCHES * BATCH_SIZE:
    NUM_BATCHES = documents // BATCH_SIZE
    print(f"NUM_BATCHES lowered to {NUM_BATCHES}: all the batches of {BATCH_SIZE} these hold.")
print("\nA document:\n", next(iter(texts)).numpy().decode("utf-8")[:400])

# The same tokenized batches train both models below (same preset, same tokenizer).
train_ds, _ = lk.make_lm_datasets(
    texts, gpt2_lm, batch_size=BATCH_SIZE, num_batches=NUM_BATCHES, seed=SEED
)
x_batch = next(train_ds.as_numpy_iterator())[0]  # NumPy, for every backend: (batch, sequence)
print("one batch:", {name: tuple(value.shape) for name, value in x_batch.items()})

# %% [markdown]
# ## Full fine-tuning, measured
#
# Three callbacks from the package measure the run: `StepTimeCallback` times every step and keeps
# the first (tracing and compilation) apart from the steady state; `MemoryCallback` reads the
# accelerator allocator's peak after every step, or on a CPU the process's peak resident memory,
# and says which; `LossHistory` keeps the loss of every step. The tutorial's memory callback
# calls a GPU-only TensorFlow function and crashes a CPU runtime; this one picks a probe that works
# on the device at hand. The optimizer and loss are the tutorial's.


# %%
def compile_like_the_tutorial(model):
    model.compile(
        optimizer=lk.tutorial_optimizer(LEARNING_RATE),  # what `lk.compare` uses too
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        weighted_metrics=["accuracy"],
    )


def train_and_measure(model):
    """Fits one epoch of `train_ds`; returns what the callbacks measured."""
    memory = lk.MemoryCallback()
    timer = lk.StepTimeCallback(tokens_per_step=BATCH_SIZE * SEQUENCE_LENGTH)
    losses = lk.LossHistory()
    with lk.preprocessor_detached(model):  # the batches are tokenized already
        model.fit(train_ds, epochs=1, shuffle=False, callbacks=[memory, timer, losses])
    # Plain numbers, not the callbacks: those hold the model, which must be freed later.
    measured = {
        **timer.summary(),
        "peak_bytes": memory.peak_bytes,
        "peak_so_far": memory.history,  # bytes, after each step
        "in_use": memory.current_history,  # bytes, after each step
        "memory_source": memory.source,
        "memory_resettable": memory.probe.resettable,
        "losses": losses.losses,
    }
    print(f"first step (tracing + compiling): {measured['first_step_s']:.2f} s")
    print(
        f"steady state: {measured['step_time_s'] * 1000:.1f} ms a step (median), "
        f"{measured['tokens_per_s']:,.0f} tokens/s"
    )
    print(f"peak memory: {lk.format_bytes(measured['peak_bytes'])}, measured as: {memory.source}")
    first, last = measured["losses"][0], measured["losses"][-1]
    print(f"loss: {first:.3f} at the first step, {last:.3f} at the last")
    return measured


compile_like_the_tutorial(gpt2_lm)
full_run = train_and_measure(gpt2_lm)
full_counts = lk.trainable_summary(gpt2_lm)

# %% [markdown]
# As in the tutorial, the fine-tuned model completes two prompts. The text is kept to be read
# again next to the LoRA model's at the end. With `WEIGHTS="random"` (offline), or after only a few
# steps, the text is gibberish: the point there is that everything runs, not what it says.

# %%
PROMPTS = ("I like basketball", "That Italian restaurant is")


def generate(model, prompt):
    start = time.perf_counter()
    text = model.generate(prompt, max_length=MAX_GENERATION_LENGTH)
    return text, time.perf_counter() - start


full_texts = {}
for number, prompt in enumerate(PROMPTS):
    full_texts[prompt], seconds = generate(gpt2_lm, prompt)
    compiles = " (the first call also compiles)" if number == 0 else ""
    print(f"--- full fine-tuning, {seconds:.2f} s{compiles}")
    print(full_texts[prompt])

# %% [markdown]
# Before LoRA trains, the fully fine-tuned model and its optimizer state are let go, so that an
# accelerator's allocator has that memory back. (A CPU process's peak resident memory keeps its
# high-water mark whatever we free: more on that with the plots.)

# %%
del gpt2_lm
_ = gc.collect()  # a model's variables sit in reference cycles

# %% [markdown]
# ## The LoRA layer
#
# The package's layer wraps a built `EinsumDense` (GPT-2's query, key, value and attention output)
# or `Dense`. Its whole behaviour is in a base class; the subclass only says which einsum the
# wrapped layer computes. Here is the source, read from the installed package rather than copied:


# %%
def show_source(*objects):
    source = "\n\n".join(inspect.getsource(item) for item in objects)
    display(Markdown(f"```python\n{source}\n```"))


show_source(lk.LoraEinsumDense)
show_source(
    lk.BaseLoraLayer.build,
    lk.BaseLoraLayer.call,
    lk.BaseLoraLayer.merge,
    lk.BaseLoraLayer.unmerge,
)

# %% [markdown]
# ## Injecting LoRA into GPT-2
#
# A fresh copy of the same model (same preset and seed), then `lk.apply_lora` wraps the query and
# value projections of every transformer block and freezes every other weight. The count of what
# trains is read from the model, then checked against the formula above.

# %%
keras.utils.set_random_seed(SEED)
lora_lm = lk.load_gpt2(PRESET, weights=WEIGHTS, sequence_length=SEQUENCE_LENGTH)
TARGETS = ("query", "value")
wrappers = lk.apply_lora(lora_lm, rank=RANK, alpha=ALPHA, targets=TARGETS)

first = wrappers[0]
print(f"{len(wrappers)} wrapped layers, e.g. {first.name}:")
print(f"  frozen kernel W {tuple(first.original_layer.kernel.shape)}")
print(f"  A {tuple(first.lora_kernel_a.shape)}, B {tuple(first.lora_kernel_b.shape)}")
print(f"  scaling alpha / rank = {ALPHA} / {RANK} = {first.scaling}")
print("LoRA model:", lk.format_trainable_summary(lora_lm))


def lora_count(architecture, rank, targets):
    """Trainable LoRA weights: each target of each block trains r x (d_in + d_out)."""
    hidden = architecture["hidden_dim"]
    return architecture["num_layers"] * len(targets) * rank * (hidden + hidden)


backbone = lora_lm.backbone
this_architecture = {"num_layers": backbone.num_layers, "hidden_dim": backbone.hidden_dim}
expected = lora_count(this_architecture, RANK, TARGETS)
lora_counts = lk.trainable_summary(lora_lm)
assert lora_counts["trainable"] == expected, (lora_counts, expected)
print(
    f"formula: {this_architecture['num_layers']} blocks x {len(TARGETS)} targets x {RANK} x "
    f"({backbone.hidden_dim} + {backbone.hidden_dim}) = {expected:,}: it matches"
)
print(
    f"trainable weights: {full_counts['trainable']:,} (full) -> {lora_counts['trainable']:,} "
    f"(LoRA), {full_counts['trainable'] / lora_counts['trainable']:,.0f}x fewer"
)
if PRESET != "gpt2_base_en":
    base_count = lora_count(lk.GPT2_ARCHITECTURES["gpt2_base_en"], RANK, TARGETS)
    print(f"gpt2_base_en at rank {RANK} on {' and '.join(TARGETS)} would train {base_count:,}")

# %% [markdown]
# ## LoRA fine-tuning, measured
#
# The same data, optimizer, loss and callbacks; only the adapters train.

# %%
compile_like_the_tutorial(lora_lm)
lora_run = train_and_measure(lora_lm)

# %% [markdown]
# ## Full fine-tuning against LoRA
#
# The plots are drawn from what the callbacks measured above, in this session. Two cautions, both
# printed below when they apply. On a GPU the allocator's peak is reset when each `fit` begins, so
# each run has its own peak. On a CPU the only measure is the process's peak resident memory, which
# the operating system cannot reset, and which includes Python and the TensorFlow runtime: in one
# process the LoRA run's peak also holds everything that came before it. That is why
# `lk.compare` (notebook 02) trains each mode in its own fresh process.

# %%
runs = {"full fine-tuning": full_run, "LoRA": lora_run}
names, colors = list(runs), ["C0", "C1"]
largest = max(run["peak_bytes"] for run in runs.values())
unit, unit_bytes = ("GiB", 2**30) if largest >= 2**30 else ("MiB", 2**20)

figure, axes = plt.subplots(1, 3, figsize=(16, 4.5), layout="constrained")
for (label, run), color in zip(runs.items(), colors, strict=True):
    steps = np.arange(1, len(run["peak_so_far"]) + 1)
    peak_so_far = np.array(run["peak_so_far"]) / unit_bytes
    in_use = np.array(run["in_use"]) / unit_bytes
    axes[0].plot(steps, peak_so_far, color=color, marker=".", label=f"{label}: peak so far")
    axes[0].plot(steps, in_use, color=color, linestyle="--", label=f"{label}: in use")
axes[0].xaxis.set_major_locator(plt.MaxNLocator(integer=True))
axes[0].set(
    title="Memory after each training step", xlabel="training step", ylabel=f"memory ({unit})"
)
axes[0].legend(fontsize="small")

peaks = [run["peak_bytes"] / unit_bytes for run in runs.values()]
axes[1].bar(names, peaks, color=colors)
axes[1].set(title="Peak memory", ylabel=f"peak memory ({unit})")
for position, peak in enumerate(peaks):
    axes[1].text(position, peak, f"{peak:.3g} {unit}", ha="center", va="bottom")

medians = np.array([run["step_time_s"] for run in runs.values()]) * 1000
low = medians - np.array([run["step_time_p25_s"] for run in runs.values()]) * 1000
high = np.array([run["step_time_p75_s"] for run in runs.values()]) * 1000 - medians
axes[2].bar(names, medians, yerr=[low, high], capsize=6, color=colors)
axes[2].set(title="Step time (median; bars: 25th-75th percentile)", ylabel="step time (ms)")
for position, median in enumerate(medians):
    axes[2].text(position, median / 2, f"{median:.3g} ms", ha="center", color="white")
figure.suptitle(
    f"{PRESET} ({WEIGHTS} weights), batch {BATCH_SIZE} x {SEQUENCE_LENGTH} tokens, "
    f"{RUNTIME.device}. "
    f"Memory: {full_run['memory_source']}",
    fontsize="medium",
)
plt.show()

print(f"step time, LoRA / full: {medians[1] / medians[0]:.2f}")
print(f"peak memory, LoRA / full: {lora_run['peak_bytes'] / full_run['peak_bytes']:.2f}")
if not lora_run["memory_resettable"]:
    print(
        "CAUTION: this probe cannot be reset, so the LoRA peak includes the full run before it "
        "in this process. For a fair memory comparison, run notebook 02 (one process per mode)."
    )

# %% [markdown]
# ## Merging, and the equal-cost inference check
#
# After training, `lk.merge_lora` folds each update into its frozen kernel,
# `W <- W + (alpha / r) A B`, and the layer skips its LoRA branch: the merged model computes
# exactly the operations of the base model, so inference costs the same. Below, the forward pass
# of the backbone is timed against a freshly loaded base model (taking turns, the fastest of
# several passes, after one that compiles it), first with LoRA unmerged, then merged; and the
# outputs of the merged and unmerged models are compared.


# %%
def forward_seconds(models, repeats=10):
    """For each model, the fastest of `repeats` compiled forward passes of its backbone, in s.

    The models take turns, so a slow spell of the machine hits them all alike, and the fastest
    pass counts, not the mean: other work on the machine only ever adds time.
    """
    for model in models:
        model.backbone.predict_on_batch(x_batch)  # traces and compiles
    times = [[] for _ in models]
    for _ in range(repeats):
        for model, model_times in zip(models, times, strict=True):
            start = time.perf_counter()
            model.backbone.predict_on_batch(x_batch)  # returns NumPy: waits for the device
            model_times.append(time.perf_counter() - start)
    return [min(model_times) for model_times in times]


keras.utils.set_random_seed(SEED)
base_lm = lk.load_gpt2(PRESET, weights=WEIGHTS, sequence_length=SEQUENCE_LENGTH)

unmerged_output = keras.ops.convert_to_numpy(lora_lm(x_batch))
base_seconds, unmerged_seconds = forward_seconds([base_lm, lora_lm])
print(
    f"LoRA, unmerged: {unmerged_seconds / base_seconds:.2f}x the base model's time "
    f"({unmerged_seconds * 1000:.2f} ms against {base_seconds * 1000:.2f} ms a forward pass)"
)

lk.merge_lora(lora_lm)  # also drops the functions Keras traced for the unmerged model
merged_output = keras.ops.convert_to_numpy(lora_lm(x_batch))
base_seconds, merged_seconds = forward_seconds([base_lm, lora_lm])
print(
    f"LoRA, merged:   {merged_seconds / base_seconds:.2f}x the base model's time "
    f"({merged_seconds * 1000:.2f} ms against {base_seconds * 1000:.2f} ms a forward pass)"
)
difference = np.abs(merged_output - unmerged_output).max()
print(f"largest difference, merged vs unmerged logits: {difference:.2e}")

# %% [markdown]
# On a shared or busy CPU, repeated timings vary by several percent: read ratios near 1 as "the
# same cost".
#
# ## Text generation
#
# The merged LoRA model completes the tutorial's prompts, printed under the fully fine-tuned
# model's completions from before.

# %%
for prompt in PROMPTS:
    text, seconds = generate(lora_lm, prompt)
    print(f"--- full fine-tuning\n{full_texts[prompt]}")
    print(f"--- LoRA, merged ({seconds:.2f} s)\n{text}\n")

# %% [markdown]
# ## Saving the adapter
#
# Only the LoRA weights need saving: anyone with the base model can apply them. `lk.save_adapter`
# writes them with the settings and architecture they fit, and `lk.load_adapter` checks both
# before loading. Below, the adapter is loaded into the fresh base model, which then computes what
# the trained LoRA model computes.

# %%
adapter_path = os.path.join(tempfile.mkdtemp(), "gpt2_lora.lora.h5")
lk.save_adapter(lora_lm, adapter_path)  # saves the same adapter merged or not
adapter_bytes = os.path.getsize(adapter_path)
model_bytes = sum(
    int(np.prod(weight.shape)) * np.dtype(weight.dtype).itemsize for weight in base_lm.weights
)
print(f"adapter file: {lk.format_bytes(adapter_bytes)} on disk ({adapter_path})")
print(
    f"the model's weights: {lk.format_bytes(model_bytes)} "
    f"({model_bytes / adapter_bytes:,.0f}x the adapter)"
)

settings = lk.load_adapter(base_lm, adapter_path)
print("loaded into the base model with", settings)
reloaded_output = keras.ops.convert_to_numpy(base_lm(x_batch))
print(
    f"largest difference, reloaded vs trained LoRA logits: "
    f"{np.abs(reloaded_output - merged_output).max():.2e}"
)

# %% [markdown]
# ## Where next
#
# The memory comparison above shares one process between both runs. Notebook
# `02_memory_time_report` runs each mode in its own process with `lk.compare`, sweeps the LoRA
# rank, and explains the measured peaks against a first-principles estimate of where the memory
# goes; the same report comes from the command line with `lora-keras compare`.
