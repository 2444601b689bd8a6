"""What each backend adds to the first-principles estimate, derived where its code says, fitted
where only a measurement can (and said so): the planner's prediction of a measured peak.

A training step has two moments where memory peaks:
- the backward pass: weights, AdamW slots, the saved activations and the gradients;
- the optimizer update: weights, slots, every gradient and the update's temporaries (the
  activations are freed by then).
The prediction is the larger, plus the framework's constant share and, on a CPU, the runtime.

Derived from each backend's code (Keras 3.15):
- torch: AdamW updates every variable at once with `torch._foreach_*` ops, whose expression
  `m * alpha / (sqrt(v) + eps)` holds three trainable-sized temporaries beside the gradients;
  `cross_entropy` saves the log-softmax, so the logits, it and their gradient are three
  logits-sized tensors; the step's `y_pred` logits are still alive during the update.
- TensorFlow (graph, no XLA): the graph runs every variable's update at once: three temporaries
  each, as torch; the unfused cross-entropy keeps three logits-sized tensors.
- XLA (JAX `jit_compile`): the cross-entropy fuses (two logits-sized tensors, the estimate's);
  weights and slots are donated, so the update writes in place (no temporaries); gradients are
  produced while activations are freed, so at the backward pass's peak only the head's
  gradient (the tied embedding's, the first one computed) exists beside all activations.

Fitted (least squares on the committed results, `benchmarks/planner_calibration.py`):
- `runtime`: on a CPU the process's resident memory before any model exists, the median of
  `memory_checkpoints.after_imports` over every committed run of that backend; 0 on a GPU, whose
  allocator's peak counts tensors only.
- `constant`: memory the framework holds whatever the model (TensorFlow's traced graph, torch's
  cuBLAS workspaces and cached blocks, the allocator's fragmentation on a CPU).
- `kept`: activations an unfused, op-by-op graph keeps beyond the minimal set, as a fraction of
  it (TensorFlow's graph on a CPU; JAX without XLA, whose eager differentiation keeps every
  primitive's residuals).
- `update` where the code does not explain it: torch's measured full run holds about 4 trainable
  sizes of temporaries during the update, not the 3 its expression makes (torch's CPU takes its
  GPU's value); JAX without XLA, from its one measured full run.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Framework:
    """How one backend on one kind of device spends memory beside the estimate.

    Args:
        fused_loss: the cross-entropy is fused (XLA): 2 logits-sized tensors, else 3.
        update: temporaries of the optimizer update, in trainable-weight sizes.
        held_logits: logits-sized tensors still alive during the update.
        gradient_sweep: gradients appear while activations are freed (XLA): at the backward
            pass's peak only the head's gradient exists.
        remat_saves: whether `remat` lowers the peak under a `mixed_` policy (TensorFlow's
            did not in the one measured pair, `levers-cpu`).
        runtime, constant, kept: fitted (see the module's docstring); bytes, bytes, a fraction.
        fitted: the names of the fields fitted to measurements rather than derived.
        update_as: the group whose fitted `update` this one takes (torch's CPU, the same
            optimizer code as its GPU, where the allocator counts tensors exactly).
    """

    fused_loss: bool = False
    update: float = 3.0
    held_logits: int = 0
    gradient_sweep: bool = False
    remat_saves_mixed: bool = True
    runtime: int = 0
    constant: int = 0
    kept: float = 0.0
    fitted: tuple = ()
    update_as: tuple = ()


# (backend, device kind, XLA) -> Framework. `runtime`, `constant`, `kept` and JAX's eager
# `update` are written by `benchmarks/planner_calibration.py --write` (do not edit by hand);
# a combination with no measured run takes what is derived, and says so (`fitted=()`).
FRAMEWORKS = {
    # TensorFlow compiles to a graph with or without XLA; only its CPU was measured.
    ("tensorflow", "cpu"): Framework(
        remat_saves_mixed=False, fitted=("runtime", "constant", "kept")
    ),
    ("tensorflow", "gpu"): Framework(),
    ("torch", "cpu"): Framework(
        held_logits=1, fitted=("runtime", "constant"), update_as=("torch", "gpu")
    ),
    ("torch", "gpu"): Framework(held_logits=1, fitted=("constant", "update")),
    ("jax", "cpu"): Framework(fitted=("runtime", "kept", "update")),
    ("jax", "gpu"): Framework(),
    ("jax-xla", "cpu"): Framework(fused_loss=True, update=0.0, gradient_sweep=True),
    ("jax-xla", "gpu"): Framework(fused_loss=True, update=0.0, gradient_sweep=True),
}
# FITTED-BEGIN (written by benchmarks/planner_calibration.py --write)
FITTED = {
    ("jax", "cpu"): {"runtime": 952381440, "kept": 2.3, "update": 11.855},
    ("jax-xla", "gpu"): {},
    ("tensorflow", "cpu"): {"runtime": 876394496, "constant": 433857178, "kept": 0.313},
    ("torch", "cpu"): {"runtime": 1203320832, "constant": 460065686},
    ("torch", "gpu"): {"constant": 70601728, "update": 4.056},
}
# FITTED-END
BACKENDS = ("tensorflow", "jax", "torch")
DEVICE_KINDS = ("cpu", "gpu")


def framework_for(backend, device_kind, jit_compile=False):
    """The `Framework` of `backend` ("tensorflow", "jax", "torch") on a "cpu" or "gpu",
    with XLA or not (only JAX changes with it: TensorFlow runs a graph either way, and
    torch's `jit_compile` is not XLA), its fitted constants filled in."""
    if backend not in BACKENDS:
        raise ValueError(f"Unknown backend {backend!r}. Known backends: {', '.join(BACKENDS)}.")
    if device_kind not in DEVICE_KINDS:
        raise ValueError(f"Unknown device kind {device_kind!r}: 'cpu' or 'gpu'.")
    key = ("jax-xla" if backend == "jax" and jit_compile else backend, device_kind)
    framework = dataclasses.replace(FRAMEWORKS[key], **FITTED.get(key, {}))
    if framework.update_as and "update" in FITTED.get(framework.update_as, {}):
        framework = dataclasses.replace(framework, update=FITTED[framework.update_as]["update"])
    return framework


def combine(first, framework, head_gradient_bytes, logits_bytes):
    """The predicted peak, by component: the larger of the backward pass and the update.

    Args:
        first: the first-principles estimate (`estimate_training_memory`), computed with
            `logits_copies=2 if framework.fused_loss else 3`.
        framework: a `Framework`.
        head_gradient_bytes: the gradient that exists first in the backward pass (the tied
            embedding's in full fine-tuning), what a gradient sweep holds at its peak.
        logits_bytes: one float32 logits tensor (batch x seq x vocabulary x 4).

    Returns:
        `{"weights", "gradients", "optimizer_state", "activations", ["dora"], ["mixlora"],
        "framework", "optimizer_update", "runtime", "total"}` in bytes, and `"phase"`:
        "backward" or "update", the moment the peak is predicted at.
    """
    extras = {name: first[name] for name in ("dora", "mixlora") if name in first}
    saved = first["activations"] + sum(extras.values())
    gradients = first["gradients"]
    backward_gradients = (
        min(gradients, head_gradient_bytes) if framework.gradient_sweep else gradients
    )
    backward = backward_gradients + saved * (1 + framework.kept)
    held = framework.held_logits * logits_bytes
    update = gradients + framework.update * gradients + held
    shared = {"weights": first["weights"], "optimizer_state": first["optimizer_state"]}
    if backward >= update:
        components = {
            **shared,
            "gradients": backward_gradients,
            "activations": first["activations"],
            **extras,
            "framework": round(framework.constant + saved * framework.kept),
            "optimizer_update": 0,
        }
        phase = "backward"
    else:
        components = {
            **shared,
            "gradients": gradients,
            "activations": held,
            "framework": framework.constant,
            "optimizer_update": round(framework.update * gradients),
        }
        phase = "update"
    components["runtime"] = framework.runtime
    components["total"] = sum(components.values())
    return components, phase
