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
# # What LoRA saves: a memory and time report for your hardware
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/lora-keras/lora-keras/blob/main/notebooks/02_memory_time_report.ipynb)
#
# **Why measure.** LoRA shrinks the gradients and the optimizer state, but the frozen weights and
# most activations stay: how much it saves depends on the model, the batch, the sequence length
# and the device. The honest answer for your hardware is a measurement on it, and a fair one.
# Notebook 01 tells the story in one process; here `lk.compare` runs every training mode in a
# fresh Python process, so one run's peak memory and compiled graphs never leak into the next,
# and an out-of-memory run is recorded rather than fatal.
#
# **What you will see:** full fine-tuning and LoRA trained on this runtime, each in its own
# process, reported side by side (step time, peak memory, loss), a short LoRA rank sweep, and where
# the memory of each goes, measured against an estimate from first principles. Every table and
# plot below is drawn from the `results.json` those processes write; no number is typed into the
# text.

# %% tags=["parameters"]
# None: chosen for this runtime by the set-up cell below, which prints each value and why.
PRESET = None  # "gpt2_base_en", the tutorial's; or "gpt2_tiny" (small, for CPUs), or a folder
WEIGHTS = None  # "pretrained" where they can be had, else "random" (offline: same architecture)
DATA = None  # "reddit_tifu" (the tutorial's) on Colab when online, else "embedded" (no download)
NUM_BATCHES = None  # training steps a run: the tutorial's number on a GPU, a few on a CPU
BATCH_SIZE = None  # the tutorial's batch size on a GPU, a smaller one on a CPU
SEQUENCE_LENGTH = 128
RANK = 4
ALPHA = 32.0
SWEEP_RANKS = None  # the LoRA ranks the sweep trains: four on a GPU, two on a CPU
SWEEP_NUM_BATCHES = 50  # the sweep's batches a rank, at most: memory and time settle quickly

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
    globals(), gpu={"SWEEP_RANKS": (1, 4, 16, 64)}, cpu={"SWEEP_RANKS": (1, 8)}
)

# %% [markdown]
# ## Full fine-tuning against LoRA, one process each
#
# `lk.compare` trains each mode on the same data, seed and optimizer (the tutorial's AdamW) in a
# fresh process, relays its output here as it runs, and saves its results as soon as it ends, in
# a new folder under `lora-keras-results/`. Generated text is worth reading only from pretrained
# weights, so only then does it also complete two prompts.

# %%
# The story's imports, after the set-up cell, which chose Keras's backend.
# ruff: noqa: E402
import re
import shlex
from pathlib import Path

from IPython.display import Image, Markdown, display

import lora_keras as lk

PROMPTS = ("I like basketball", "That Italian restaurant is")
results = lk.compare(
    preset=PRESET,
    weights=WEIGHTS,
    data=DATA,
    modes=("full", "lora"),
    steps=NUM_BATCHES,
    batch_size=BATCH_SIZE,
    sequence_length=SEQUENCE_LENGTH,
    rank=RANK,
    alpha=ALPHA,
    sample_prompts=PROMPTS if WEIGHTS == "pretrained" else (),
)
print("\nresults:", results["folder"])

# %% [markdown]
# ## The report
#
# `report.md` and its plots, as `lk.compare` wrote them into the results folder: the environment,
# the configuration, the summary table, the plots, and a first reading of where the memory goes.

# %%
IMAGE = re.compile(r"^!\[(?P<title>[^\]]*)\]\((?P<file>[^)]+)\)$")


def show_report(folder):
    """Displays `folder/report.md`, with its plots embedded so they show everywhere."""
    folder = Path(folder)
    text = []
    for line in (folder / "report.md").read_text(encoding="utf-8").splitlines():
        image = IMAGE.match(line.strip())
        if image is None:
            text.append(line)
            continue
        display(Markdown("\n".join(text)))
        text = []
        display(Image(filename=str(folder / image["file"])))
    display(Markdown("\n".join(text)))


show_report(results["folder"])

# %% [markdown]
# ## Where the memory of full fine-tuning goes, and what LoRA removes
#
# Training holds four things at its peak:
#
# - **weights**: every weight, trainable or frozen;
# - **gradients**: one per *trainable* weight;
# - **AdamW state**: two moment estimates per *trainable* weight;
# - **activations**: what the forward pass keeps for the backward pass, growing with the batch
#   and the sequence length.
#
# LoRA freezes the model, so the gradients and the optimizer state shrink to those of the small
# adapters; the weights stay (plus the adapters) and so do most activations, since the gradient
# must still flow back through every block. Here are the package's estimates for the two runs
# above, component by component:

# %%
runs = {run["mode"]: run for run in results["runs"] if run["status"] == "ok"}
for run in results["runs"]:
    if run["status"] != "ok":
        print(f"{run['mode']}: {run['status']} ({run.get('error')}), left out below")

COMPONENTS = ("weights", "gradients", "optimizer_state", "activations", "total")
if {"full", "lora"} <= runs.keys():
    full, lora = runs["full"]["estimate"], runs["lora"]["estimate"]
    rows = ["| component | full fine-tuning | LoRA | LoRA saves |", "|---|---|---|---|"]
    for name in COMPONENTS:
        saved = full[name] - lora[name]
        saved_text = f"{lk.format_bytes(saved)} ({saved / full[name]:.0%})" if saved > 0 else "-"
        rows.append(
            f"| {name.replace('_', ' ')} | {lk.format_bytes(full[name])} | "
            f"{lk.format_bytes(lora[name])} | {saved_text} |"
        )
    display(Markdown("\n".join(rows)))
    print("Why, component by component (estimate of full fine-tuning):")
    for sentence in lk.explain_estimate(full):
        print(" -", sentence)

# %% [markdown]
# ### The measured peak against the estimate
#
# The estimate counts the model's tensors only. What was measured depends on the device, and the
# report names it next to every figure. On a GPU it is the allocator's peak, which also holds the
# framework's workspace and fragmentation. On a CPU it is the whole process's peak resident
# memory: Python, the TensorFlow runtime and its caches come on top of the model, and for a small
# model they are most of it. The difference between the two runs is then closer to what the model
# itself accounts for.

# %%
for mode, run in runs.items():
    peak, estimate = run["peak_memory_bytes"], run["estimate"]["total"]
    print(
        f"{mode:>5}: measured {lk.format_bytes(peak)}, estimated {lk.format_bytes(estimate)} "
        f"({peak / estimate:.2f}x), measured as: {run['memory_source']}"
    )
if {"full", "lora"} <= runs.keys():
    measured = runs["full"]["peak_memory_bytes"] - runs["lora"]["peak_memory_bytes"]
    estimated = runs["full"]["estimate"]["total"] - runs["lora"]["estimate"]["total"]
    print(
        f"full minus LoRA: measured {lk.format_bytes(measured)}, "
        f"estimated {lk.format_bytes(estimated)}"
    )
    ratio = runs["lora"]["step_time_s"] / runs["full"]["step_time_s"]
    print(f"step time, LoRA / full: {ratio:.2f}")

# %% [markdown]
# ## A short rank sweep
#
# The rank sets how many weights LoRA trains. `lk.sweep` trains LoRA once per rank, again one
# process each. The trainable weights grow in proportion to the rank; watch how little the memory
# and the step time follow, since the frozen model and the activations dominate both.

# %%
SWEEP_STEPS = min(NUM_BATCHES, SWEEP_NUM_BATCHES)
sweep = lk.sweep(
    ranks=SWEEP_RANKS,
    preset=PRESET,
    weights=WEIGHTS,
    data=DATA,
    steps=SWEEP_STEPS,
    batch_size=BATCH_SIZE,
    sequence_length=SEQUENCE_LENGTH,
    alpha=ALPHA,
)
print("\nresults:", sweep["folder"])

# %%
rows = ["| rank | trainable weights | peak memory | step time (median) | final loss |"]
rows.append("|---|---|---|---|---|")
for run in sweep["runs"]:
    if run["status"] != "ok":
        rows.append(f"| {run['rank']} | {run['status']} | | | |")
        continue
    rows.append(
        f"| {run['rank']} | {run['trainable_params']:,} | "
        f"{lk.format_bytes(run['peak_memory_bytes'])} | {run['step_time_s'] * 1000:.1f} ms | "
        f"{run['loss'][-1]:.4f} |"
    )
display(Markdown("\n".join(rows)))
sweep_plot = Path(sweep["folder"]) / "sweep.png"
if sweep_plot.exists():
    display(Image(filename=str(sweep_plot)))

# %% [markdown]
# ## The same report from the command line
#
# The package installs a `lora-keras` command that does what this notebook did, for your own
# hardware: each run in its own process, a new folder with `results.json`, `report.md` and the
# plots. `lora-keras report FOLDER` redraws a report from its `results.json` alone, for instance
# after copying it from the machine that measured it. On Colab, prefix a command with `!` to run
# it in a cell. These are the commands for the settings of this session:

# %%
common = ["--preset", str(PRESET), "--weights", WEIGHTS, "--data", DATA]
common += ["--batch-size", str(BATCH_SIZE), "--sequence-length", str(SEQUENCE_LENGTH)]
common += ["--alpha", str(ALPHA)]
commands = [
    ["lora-keras", "compare", *common, "--steps", str(NUM_BATCHES), "--rank", str(RANK)],
    ["lora-keras", "sweep", *common, "--steps", str(SWEEP_STEPS)]
    + ["--ranks", ",".join(str(rank) for rank in SWEEP_RANKS)],
    ["lora-keras", "report", str(results["folder"])],
]
for command in commands:
    print(shlex.join(command))
print("\nAll options: lora-keras compare --help")
