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
# # What the savings cost: what each method learns, and what it forgets
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/lora-keras/lora-keras/blob/main/notebooks/05_learn_and_forget.ipynb)
#
# **Why.** Notebooks 02-04 measure what LoRA and its family *save*: step time and memory. A
# saving is only worth what it costs in quality. Biderman et al. (2024, "LoRA Learns Less and
# Forgets Less") found that LoRA gains less than full fine-tuning on a new domain, and loses
# less of what the model knew. This notebook measures that trade-off here, offline: on
# `gpt2_mini`, a small GPT-2 that lora_keras pretrained itself on five families of its embedded
# corpus, fine-tuned on the sixth (recipes), which it never saw.
#
# **What you will see:** what a held-out loss is, on the pretrained model and on random weights;
# full fine-tuning, LoRA, Keras's LoRA, DoRA, QLoRA and MixLoRA fine-tuned on recipes, one
# process each, each evaluated before and after on held-out recipes (what it learned) and on
# held-out documents of the pretraining families (what it forgot); the plot of one against the
# other; and what to conclude from it, and what not. Every number comes from the objects built
# here or from the `results.json` the runs write.

# %% tags=["parameters"]
# None: chosen for this runtime by the set-up cell below, which prints each value and why.
PRESET = "gpt2_mini"  # pretrained by lora_keras, shipped, offline; or "gpt2_base_en" on Colab
WEIGHTS = None  # "pretrained": gpt2_mini's own weights (a random model has nothing to forget)
DATA = "embedded:recipe"  # the family gpt2_mini never saw; on Colab with GPT-2, "reddit_tifu"
NUM_BATCHES = None  # training steps a run: hundreds, so that the target loss clearly moves
BATCH_SIZE = None
SEQUENCE_LENGTH = 128
LEARNING_RATE = 1e-3  # one for every method, as in one comparison (see "What not to conclude")
RANK = 4  # of LoRA, Keras's LoRA, DoRA and QLoRA (MixLoRA's experts have their own, 8)
ALPHA = 16.0

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
    globals(), gpu={"NUM_BATCHES": 240, "BATCH_SIZE": 4}, cpu={"NUM_BATCHES": 240, "BATCH_SIZE": 4}
)

# %% [markdown]
# ## Held-out loss: what a model knows, on documents it never trained on
#
# A language model's loss on a document is the mean cross-entropy of each next token: how
# surprised it is, in nats. Measured on *held-out* documents, never trained on, it says how well
# the model does on text like them, not how well it memorised its training set. Perplexity is
# its exponential: the number of equally likely tokens the model is choosing between.
#
# Below, the held-out loss of the pretrained model and of the same architecture with random
# weights, on held-out documents of the families it was pretrained on ("keep": what it knows)
# and on held-out recipes ("target": what it will learn).

# %%
# The story's imports, after the set-up cell, which chose Keras's backend.
# ruff: noqa: E402
from pathlib import Path

from IPython.display import Image, Markdown, display

import lora_keras as lk
from lora_keras.report.quality import gain

split = lk.corpus_split(lk.GPT2_MINI_HELDOUT_FAMILY)
held_out = {"keep": split.keep_heldout, "target": split.target_heldout}
rows = ["| weights | keep (pretraining families) | target (recipes) |", "|---|---|---|"]
for weights in dict.fromkeys(["random", WEIGHTS]):
    lm = lk.load_gpt2(PRESET, weights=weights, sequence_length=SEQUENCE_LENGTH)
    losses = {name: lk.evaluate_heldout(lm, texts) for name, texts in held_out.items()}
    cells = [f"{loss['loss']:.3f} (ppl {loss['perplexity']:,.1f})" for loss in losses.values()]
    rows.append(f"| {weights} | {' | '.join(cells)} |")
display(Markdown("\n".join(rows)))

# %% [markdown]
# With its pretrained weights, `gpt2_mini` predicts its pretraining families' held-out documents
# far better than random weights do. On recipes it can do *worse* than random: many recipe
# words never came up in pretraining as a next token, so it learned to give them almost no
# probability. That is what fine-tuning on recipes has to fix, and what makes forgetting
# visible: a method that learns recipes may pay for it on the other families.

# %% [markdown]
# ## Every method, one process each, evaluated before and after
#
# The same data (recipes, with their first documents held out), seed, optimizer, learning rate
# and steps for each method. `lk.compare` evaluates every run's held-out loss before its first
# step and after its last, apart from the timed steps.

# %%
results = lk.compare(
    preset=PRESET,
    weights=WEIGHTS,
    data=DATA,
    modes=("full", "lora", "keras_lora", "dora", "qlora", "mixlora"),
    steps=NUM_BATCHES,
    batch_size=BATCH_SIZE,
    sequence_length=SEQUENCE_LENGTH,
    rank=RANK,
    alpha=ALPHA,
    learning_rate=LEARNING_RATE,
)
folder = Path(results["folder"])
report = (folder / "report.md").read_text()
section = report.split("## What it learned")[1].split("\n## ")[0]
display(Markdown("## What it learned" + section))

# %% [markdown]
# ## Learned against forgot
#
# One point a method: up is what it learned (the target loss fell by that much), right is what it
# forgot (the keep loss rose by that much). The ideal is top left.

# %%
if (folder / "learn_forget.png").exists():
    display(Image(filename=str(folder / "learn_forget.png")))
else:
    print("No keep data set for this preset, so nothing to forget is measured: no plot.")

runs = {run["name"]: run for run in results["runs"] if run["status"] == "ok" and "eval" in run}
full = runs.get("full")
if full is not None and gain(full, "target"):
    for name, run in runs.items():
        learned = gain(run, "target") / gain(full, "target")
        forgot = gain(run, "keep")
        said = f"{name}: {learned:.0%} of full fine-tuning's gain on recipes"
        if forgot is not None:
            said += f", forgot {-forgot:+.3f} nats (full: {-gain(full, 'keep'):+.3f})"
        print(said + f", {run['trainable_params']:,} trainable weights")

# %% [markdown]
# ## What to conclude, and what not
#
# - **Read the fractions, not the absolute losses.** They are measured on a 1M-weight model and
#   a small generated corpus: they show the *shape* of the trade-off (who learns more, who
#   forgets more), which is what the paper reports for large models too.
# - **One learning rate for all.** Biderman et al. tuned each method's learning rate; here every
#   method trains at `LEARNING_RATE`, so a method that needs a larger one (LoRA usually does)
#   is shown learning less than it could. Rerun with another `LEARNING_RATE` before concluding
#   that a method cannot learn a domain.
# - **Random weights say nothing.** With `WEIGHTS="random"` there is nothing to forget, and the
#   report says so: the tests run this notebook that way, to check that it runs, not what it says.
# - **Cost beside quality.** The same report has each run's step time and peak memory: a method
#   that learns 90% as much for a tenth of the memory may be the right choice for your hardware.
# - On Colab, the same comparison on GPT-2 base with its pretrained weights:
#   `python benchmarks/learn_forget.py --preset gpt2_base_en --data reddit_tifu --keep-data
#   embedded --steps 500` (it cannot run offline).
