"""A measured run of a results.json, predicted from its configuration alone (the calibration)."""

from lora_keras.planner.predict import predict_peak


def planned_as_one_adapter(batch_size, rank, together_ranks):
    """`(batch_size, rank)` the planner plans a run with: a run training several adapters
    together (`together_ranks`) holds every adapter's sequences in its batch, its adapters
    padded to the largest rank. `rank` may be None (full fine-tuning, MixLoRA)."""
    if together_ranks:
        return batch_size * len(together_ranks), max(together_ranks)
    return batch_size, rank


def run_configuration(results, run):
    """The `predict_peak` keyword arguments of one run of `results` (a loaded results.json):
    its preset, mode, batch shape, backend, device kind, levers and adapter settings."""
    config = results["config"]
    environment = run.get("environment") or results["environment"]
    together = [adapter["rank"] for adapter in run.get("adapters", [])]
    batch_size, rank = planned_as_one_adapter(
        config["batch_size"], run.get("rank") or config["rank"], together
    )
    return {
        "preset": config["preset"],
        "mode": run["mode"],
        "batch_size": batch_size,
        "sequence_length": config["sequence_length"],
        "backend": environment["backend"],
        "device_kind": "gpu" if environment["device"].startswith("GPU") else "cpu",
        "options": run["options"],
        "rank": rank,
        "targets": tuple(config["targets"]),
        "mixlora": config.get("mixlora"),
    }


def predict_run(results, run):
    """`(components, phase)` predicted for `run` of `results`; runtime included on a CPU, so
    `components["total"]` compares with `run["peak_memory_bytes"]`."""
    components, phase, _ = predict_peak(**run_configuration(results, run))
    return components, phase
