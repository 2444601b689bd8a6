"""`lk.sweep`: LoRA at several ranks, each in its own process, into one report."""

from lora_keras.experiments.check_arguments import check_ranks
from lora_keras.experiments.compare import run_experiment


def sweep(
    ranks=(1, 2, 4, 8, 16, 64),
    preset="gpt2_base_en",
    weights=None,
    data="embedded",
    steps=10,
    batch_size=4,
    sequence_length=128,
    alpha=32.0,
    targets=("query", "value"),
    learning_rate=5e-5,
    seed=0,
    out=None,
    timeout_s=None,
    verbose=True,
    with_full=False,
    text_field="text",
    jit_compile=False,
    mixed_precision=None,
    frozen_dtype=None,
    remat=False,
    chunked_loss=False,
    backend="tensorflow",
    data_parallel=False,
):
    """Trains LoRA once per rank: trainable weights, peak memory, step time, final loss.

    Arguments are those of `lk.compare` (`text_field` and the levers included), with `ranks`
    (each once) in place of `modes` and `rank`;
    `with_full=True` also trains full fine-tuning once, drawn as a baseline in the plots.

    Returns:
        The results dict also written to `out/results.json` (`config["kind"] == "sweep"`).
    """
    modes = ["full", "lora"] if with_full else ["lora"]
    config = dict(locals(), kind="sweep", rank=None, targets=list(targets))
    del config["with_full"]  # said by `modes`
    check_ranks(ranks)
    config["ranks"] = ranks = [int(rank) for rank in ranks]
    runs = [("full", "full", None)] if with_full else []
    runs += [(f"lora_rank_{rank}", "lora", rank) for rank in ranks]
    return run_experiment(config, runs, [], timeout_s, verbose)
