"""`lk.sweep`: LoRA at several ranks, each in its own process, into one report."""

from lora_keras.experiments.compare import (
    choose_weights,
    keep_this_process_off_the_gpu,
    new_results_folder,
    run_specs,
)


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
):
    """Trains LoRA once per rank: trainable weights, peak memory, step time, final loss.

    Arguments are those of `lk.compare`, with `ranks` in place of `modes` and `rank`.

    Returns:
        The results dict also written to `out/results.json` (`config["kind"] == "sweep"`).
    """
    ranks = [int(rank) for rank in ranks]
    if not ranks or any(rank < 1 for rank in ranks):
        raise ValueError(f"ranks must be integers of at least 1, got {ranks}.")
    if steps < 2:
        raise ValueError(f"steps must be at least 2 (the first is timed apart), got {steps}.")
    weights, why = choose_weights(preset, weights)
    print(f"weights: {weights} ({why})", flush=True)
    out = new_results_folder(out, "sweep")
    keep_this_process_off_the_gpu()
    config = {
        "kind": "sweep",
        "preset": preset,
        "weights": weights,
        "data": data,
        "modes": ["lora"],
        "steps": steps,
        "batch_size": batch_size,
        "sequence_length": sequence_length,
        "rank": None,
        "ranks": ranks,
        "alpha": alpha,
        "targets": list(targets),
        "learning_rate": learning_rate,
        "seed": seed,
    }
    specs = [
        dict(config, name=f"lora_rank_{rank}", mode="lora", rank=rank, sample_prompts=[], verbose=1)
        for rank in ranks
    ]
    results = run_specs(specs, config, out, echo=verbose, timeout_s=timeout_s)
    results["folder"] = out
    return results
