"""Where the memory of a training step of a built GPT-2 model goes: the planner's model.

The formula itself is Keras-free, in `lora_keras.planner.formula` (weights, gradients, optimizer
state, activations; why LoRA saves what it saves) and `lora_keras.planner.framework` (what each
backend adds: the optimizer update's temporaries, what an unfused graph keeps, its constant
share). Here the same model reads its inputs from a built model instead of a configuration, so
that the estimate in results.json, the report's "where the memory goes" and `lora-keras plan`
never disagree. `estimate_training_memory` is re-exported from the formula.
"""

import math

import keras
import ml_dtypes  # noqa: F401  (registers bfloat16 with numpy, for dtype sizes below)
import numpy as np

from lora_keras import gpt2_surgery as surgery
from lora_keras.gpt2_surgery import lora_layers, mixlora_layers, nf4_layers
from lora_keras.layers import BaseDoraLayer
from lora_keras.nf4_format import nf4_bits_per_weight as nf4_bits_per_weight_of
from lora_keras.planner.formula import estimate_training_memory
from lora_keras.planner.framework import combine, framework_for
from lora_keras.summary import trainable_summary

__all__ = ["estimate_for_model", "estimate_training_memory", "stored_weight_bytes"]


def estimate_for_model(
    model,
    batch_size,
    sequence_length,
    remat=False,
    loss_chunk=None,
    jit_compile=False,
    backend=None,
    device_kind=None,
):
    """Estimate the training memory of a KerasHub GPT-2 model, as it is now (LoRA or not).

    The architecture comes from the backbone, the trainable and total weight counts from the
    model's weights (so LoRA, once applied, is counted), the dtypes from the backbone's dtype
    policy and its trainable weights (float32 adapters beside a bfloat16 frozen model).

    Args:
        model: a `keras_hub.models.GPT2CausalLM` or `keras_hub.models.GPT2Backbone`.
        batch_size, sequence_length: the shape of one batch of token ids.
        remat, loss_chunk: as in `estimate_training_memory`.
        jit_compile: whether the step is compiled with XLA (changes JAX's share).
        backend: "tensorflow", "jax" or "torch"; `None`: Keras's.
        device_kind: "cpu" or "gpu"; `None`: "gpu" where the backend sees one.

    Returns:
        The planner's components (`lora_keras.planner.framework.combine`) without the runtime,
        which a measurement records apart (`runtime_memory_bytes`): `weights`, `gradients`,
        `optimizer_state`, `activations`, `dora`/`mixlora` where present, `framework`,
        `optimizer_update`, and `total`, their sum.
    """
    backbone = getattr(model, "backbone", model)
    if not hasattr(backbone, "num_layers"):
        raise ValueError(
            "estimate_for_model expects a KerasHub GPT2CausalLM or GPT2Backbone; got "
            f"{type(model).__name__}, which has no `num_layers`."
        )
    counts = trainable_summary(backbone)  # each weight once, tied embeddings included
    nf4 = list(nf4_layers(backbone).values())
    # Every NF4 layer of a model shares its settings (`lk.quantize_nf4`); QLoRA's without one.
    nf4_storage = (
        {"block_size": nf4[0].block_size, "double_quant": nf4[0].double_quant} if nf4 else {}
    )
    dora = [
        layer
        for layer in lora_layers(backbone).values()
        if isinstance(layer, BaseDoraLayer) and not layer.merged
    ]
    policy = backbone.dtype_policy
    # The policy's, or float32 for the adapters beside half-precision frozen layers; where
    # trained weights differ in dtype, the widest, so the estimate errs high, never low.
    trained_dtype = max(
        {weight.dtype for weight in backbone.trainable_weights} or {policy.variable_dtype},
        key=_dtype_bytes,
    )
    mixtures = list(mixlora_layers(backbone).values())
    backend = backend or keras.backend.backend()
    framework = framework_for(backend, device_kind or _device_kind(backend), jit_compile)
    kernel_casts = policy.variable_dtype != policy.compute_dtype
    first = estimate_training_memory(
        num_layers=backbone.num_layers,
        hidden_dim=backbone.hidden_dim,
        num_heads=backbone.num_heads,
        intermediate_dim=backbone.intermediate_dim,
        vocabulary_size=backbone.vocabulary_size,
        trainable_params=counts["trainable"],
        total_params=counts["total"],
        batch_size=batch_size,
        sequence_length=sequence_length,
        weight_dtype_bytes=_dtype_bytes(trained_dtype),
        compute_dtype_bytes=_dtype_bytes(policy.compute_dtype),
        frozen_dtype_bytes=_dtype_bytes(policy.variable_dtype),
        dropout=backbone.dropout > 0,
        nf4_params=sum(math.prod(layer.kernel_shape) for layer in nf4),
        nf4_bits_per_weight=nf4_bits_per_weight_of(**nf4_storage),
        dora_output_units=sum(math.prod(layer.magnitude.shape) for layer in dora),
        dora_largest_kernel=max(
            (math.prod(layer.original_layer.kernel.shape) for layer in dora), default=0
        ),
        remat=remat and (framework.remat_saves_mixed or not kernel_casts),
        loss_chunk=loss_chunk,
        kernel_casts=kernel_casts,
        logits_copies=2 if framework.fused_loss else 3,
        mixlora_top_k=mixtures[0].top_k if mixtures and not _is_mixdora(mixtures[0]) else 0,
    )
    embedding = backbone.token_embedding.embeddings
    # In full fine-tuning the tied embedding's gradient is the first the backward pass makes.
    head = (
        math.prod(embedding.shape) * _dtype_bytes(embedding.dtype)
        if embedding.trainable
        else first["gradients"]
    )
    positions = min(loss_chunk or sequence_length, sequence_length)
    logits = batch_size * positions * backbone.vocabulary_size * 4
    components, _ = combine(first, framework, head, logits)
    del components["runtime"], components["total"]  # the runtime is measured, not estimated
    components["total"] = sum(components.values())
    return components


def _is_mixdora(mixture):
    return hasattr(mixture, "expert_in_magnitude")


def _device_kind(backend):
    """ "gpu" where the backend sees a GPU, else "cpu"."""
    if backend == "jax":
        import jax

        return "gpu" if jax.default_backend() == "gpu" else "cpu"
    if backend == "torch":
        import torch

        return "gpu" if torch.cuda.is_available() else "cpu"
    import tensorflow as tf

    return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"


def stored_weight_bytes(model):
    """Bytes the model's variables take as stored, each once, in their own dtypes.

    NF4 kernels count as their packed codes and constants (about 4.127 bits a weight);
    float weights at their variable dtype's size. A measurement, beside the estimate.
    """
    backbone = surgery.find_backbone(model)
    return int(sum(math.prod(v.shape) * _dtype_bytes(v.dtype) for v in backbone.weights))


def _dtype_bytes(dtype):
    return np.dtype(keras.backend.standardize_dtype(dtype)).itemsize
