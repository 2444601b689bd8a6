"""`lk.plan`: every mode's predicted peak, by component, whether it fits, and what would help."""

from lora_keras.planner.devices import device_memory, parse_memory
from lora_keras.planner.framework import framework_for
from lora_keras.planner.predict import predict_peak
from lora_keras.planner.speed_costs import SPEED_COSTS

# What a run that does not fit could change, each alone: (label, speed-cost label, change).
CHANGES = (
    ("remat", "remat", {"options": {"remat": True}}),
    ("chunked_loss", "chunked_loss", {"options": {"chunked_loss": True}}),
    (
        "remat + chunked_loss",
        "remat+chunked_loss",
        {"options": {"remat": True, "chunked_loss": True}},
    ),
    ("frozen_dtype bfloat16", "frozen_bfloat16", {"options": {"frozen_dtype": "bfloat16"}}),
    ("mixed_precision bfloat16", "bfloat16", {"options": {"mixed_precision": "bfloat16"}}),
    ("mode qlora", "qlora", {"mode": "qlora"}),
)


def plan(
    preset,
    modes=("full", "lora", "qlora"),
    batch_size=4,
    sequence_length=128,
    backend="tensorflow",
    device=None,
    memory=None,
    options=None,
    rank=4,
    targets=("query", "value"),
    mixlora=None,
):
    """Predict each mode's peak memory before running it: no model is built, no Keras imported.

    Args:
        preset: a GPT-2 preset name (`lk.GPT2_ARCHITECTURES`; only its shapes are used).
        modes: among "full", "lora", "keras_lora", "dora", "qlora", "mixlora".
        batch_size, sequence_length: the shape of one batch of token ids.
        backend: "tensorflow", "jax" or "torch".
        device: one of `lora_keras.planner.devices.DEVICES` ("t4", "l4", "a100-40",
            "a100-80", "h100", "h200", "cpu"); its usable memory decides `fits`.
        memory: a memory budget instead ("15GiB", or bytes), for a GPU unless `device="cpu"`.
        options: levers, as `compare` takes them (`jit_compile`, `mixed_precision`,
            `frozen_dtype`, `remat`, `chunked_loss`).
        rank, targets, mixlora: the adapters' settings, as `compare`'s.

    Returns:
        One dict per mode: `mode`, `predicted_peak_bytes`, `components` (bytes each: weights,
        gradients, optimizer_state, activations, dora/mixlora where they apply, framework,
        optimizer_update, runtime), `fits` (True/False, or None without a device or memory),
        `phase` ("backward" or "update"), `budget_bytes`, and where it does not fit `levers`:
        each change that would make it fit, its predicted peak and its measured speed cost
        (step time with it over LoRA's without, from the committed results of this backend and
        device where measured, else of the group `speed_cost_measured_on` names; None where
        no run measured it).

    Example:

    ```python
    rows = lk.plan("gpt2_medium_en", modes=["full", "lora"], device="t4", backend="torch")
    [(row["mode"], row["fits"]) for row in rows]
    ```
    """
    device_kind, budget = _budget(device, memory)
    settings = {
        "batch_size": batch_size,
        "sequence_length": sequence_length,
        "backend": backend,
        "device_kind": device_kind,
        "rank": rank,
        "targets": tuple(targets),
        "mixlora": mixlora,
    }
    if isinstance(modes, str) or not modes:
        raise ValueError(f"modes must be a non-empty list of mode names, got {modes!r}.")
    rows = []
    for mode in modes:
        components, phase, _ = predict_peak(preset, mode, options=options, **settings)
        total = components.pop("total")
        fits = None if budget is None else total <= budget
        row = {
            "mode": mode,
            "predicted_peak_bytes": total,
            "components": components,
            "fits": fits,
            "phase": phase,
            "budget_bytes": budget,
        }
        if fits is False:
            row["levers"] = _levers(preset, mode, options or {}, settings, budget)
        rows.append(row)
    return rows


def _budget(device, memory):
    if device is not None and memory is not None:
        raise ValueError("Give a device or a memory size, not both (--device or --memory).")
    if device is not None:
        spec = device_memory(device)
        return spec["kind"], spec["usable_bytes"]
    if memory is not None:
        budget = memory if isinstance(memory, int) and memory > 0 else parse_memory(memory)
        return "gpu", budget
    return "cpu", None


def _levers(preset, mode, options, settings, budget):
    group = _group(settings["backend"], settings["device_kind"], options)
    found = []
    for label, cost_label, change in CHANGES:
        new_mode = change.get("mode", mode)
        new_options = {**options, **change.get("options", {})}
        if new_mode == mode and new_options == options:
            continue  # already on
        try:
            components, _, _ = predict_peak(preset, new_mode, options=new_options, **settings)
        except ValueError:
            continue  # a combination compare refuses (frozen_dtype with full, both precisions)
        if components["total"] <= budget:
            found.append(
                {
                    "change": label,
                    "predicted_peak_bytes": components["total"],
                    **_speed_cost(group, cost_label),
                }
            )
    batch = settings["batch_size"]
    while batch > 1:
        batch //= 2
        components, _, _ = predict_peak(
            preset, mode, options=options, **{**settings, "batch_size": batch}
        )
        if components["total"] <= budget:
            found.append(
                {
                    "change": f"batch_size {batch}",
                    "predicted_peak_bytes": components["total"],
                    "speed_cost": None,
                    "speed_cost_measured_on": None,
                }
            )
            break
    return found


def _speed_cost(group, label):
    """The step-time ratio measured in this group, else in any group that measured it (where:
    `speed_cost_measured_on`, "backend/device"); None where no committed run measured it."""
    for where in (group, *sorted(SPEED_COSTS)):
        if label in SPEED_COSTS.get(where, {}):
            return {
                "speed_cost": SPEED_COSTS[where][label],
                "speed_cost_measured_on": "/".join(where),
            }
    return {"speed_cost": None, "speed_cost_measured_on": None}


def _group(backend, device_kind, options):
    jax_xla = backend == "jax" and options.get("jit_compile")
    return ("jax-xla" if jax_xla else backend, device_kind)


def frameworks_note(backend, device_kind, jit_compile=False):
    """Which of the prediction's constants were fitted to measurements, in words."""
    fitted = framework_for(backend, device_kind, jit_compile).fitted
    return f"fitted: {', '.join(fitted)}" if fitted else "derived only (no measured run here)"
