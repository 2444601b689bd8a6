"""Where the memory of a GPT-2 training step goes, estimated from first principles.

Training memory has four parts:
- weights: every weight, trainable or frozen, in its storage dtype;
- gradients: one per *trainable* weight, in the weight dtype;
- optimizer state: AdamW keeps two slots (first and second moments) per *trainable* weight;
- activations: the tensors the forward pass saves for the backward pass, for this batch.

Why LoRA saves what it saves: frozen weights get no gradient and no AdamW slots, so with LoRA the
gradients and the optimizer state shrink to those of the few adapter weights: full fine-tuning
of a float32 model holds 4x its weights (weights, gradients, two slots); LoRA barely more than 1x.
The activations largely stay: the loss's gradient must still flow back through every block to
reach the adapters in the first ones, and the layer norms, the attention softmax and GELU need
their saved tensors for that. Only the inputs of frozen matmuls (needed for weight gradients
alone) could be dropped, and whether they are depends on the framework (XLA prunes them, an eager
gradient tape may not). We count them all, as full fine-tuning needs them: the estimate is an
upper bound for the activations of a LoRA run.

DoRA adds a fifth part, `dora`, only to the estimates of models with unmerged DoRA layers. Its
magnitudes are trainable weights, so they already count in the first three parts; what it adds
is per DoRA layer the unscaled output (batch x seq x output units) that the magnitude's gradient
needs, the column norm and scale (output units each), and `V = W + s*A@B` with its square,
kernel-sized temporaries rebuilt every step for the norm and kept for no backward pass: counted
once, for the largest kernel, as layers run one after another.

Not counted: the framework's workspace, the allocator's fragmentation and caching, and, on a CPU,
the runtime itself (Python, TensorFlow/JAX/torch libraries), which the process's resident memory
includes. The four parts are summed although gradients grow while activations are freed: their
sum bounds the peak from above.
"""

import math

import keras
import ml_dtypes  # noqa: F401  (registers bfloat16 with numpy, for dtype sizes below)
import numpy as np

from lora_keras import gpt2_surgery as surgery
from lora_keras.gpt2_surgery import lora_layers, nf4_layers
from lora_keras.layers import BaseDoraLayer
from lora_keras.layers.nf4_codec import nf4_bits_per_weight as nf4_bits_per_weight_of
from lora_keras.measure.estimate_text import ADAMW_SLOTS
from lora_keras.summary import trainable_summary

# Keras losses compute in float32 whatever the compute dtype, so the softmax gradient the
# cross-entropy saves is float32.
LOSS_DTYPE_BYTES = 4


def estimate_training_memory(
    *,
    num_layers,
    hidden_dim,
    num_heads,
    intermediate_dim,
    vocabulary_size,
    trainable_params,
    total_params,
    batch_size,
    sequence_length,
    weight_dtype_bytes=4,
    compute_dtype_bytes=4,
    frozen_dtype_bytes=None,
    dropout=True,
    nf4_params=0,
    nf4_bits_per_weight=None,
    dora_output_units=0,
    dora_largest_kernel=0,
    remat=False,
    loss_chunk=None,
):
    """Estimate the memory of one training step of a GPT-2 decoder with AdamW, in bytes.

    Args:
        num_layers, hidden_dim, num_heads, intermediate_dim, vocabulary_size: the architecture
            (a `keras_hub.models.GPT2Backbone`'s attributes of the same names).
        trainable_params: weights that get gradients and optimizer slots.
        total_params: all weights, trainable or not.
        batch_size, sequence_length: the shape of one batch of token ids.
        weight_dtype_bytes: bytes per stored weight (4 for float32).
        frozen_dtype_bytes: bytes per frozen weight, where they are stored in another dtype
            than the trained ones (2 for a bfloat16 frozen model); `None`: `weight_dtype_bytes`.
        compute_dtype_bytes: bytes per activation (4 for float32, 2 under mixed precision).
        dropout: whether dropout is active in training (it saves a mask per dropout).
        nf4_params: frozen weights, among `total_params`, stored as NF4 (QLoRA's block
            kernels), at `nf4_bits_per_weight` bits each (default: QLoRA's, about 4.127)
            instead of `weight_dtype_bytes`.
            Their float copies live one matmul at a time and are not counted.
        dora_output_units: the output units of all unmerged DoRA layers together (0: no DoRA).
        dora_largest_kernel: the weights of the largest of their kernels.
        remat: whether the blocks are rematerialised: each keeps only its input, and one
            block's activations exist at a time, while it is recomputed.
        loss_chunk: positions whose logits exist at a time (a chunked loss); `None`: all.

    Returns:
        A dict of bytes: `weights`, `gradients`, `optimizer_state`, `activations`, with DoRA
        layers `dora`, and `total`, their sum. `explain_estimate` turns it into sentences.

    Example:

    ```python
    estimate = estimate_training_memory(
        num_layers=12, hidden_dim=768, num_heads=12, intermediate_dim=3072,
        vocabulary_size=50257, trainable_params=147456, total_params=124587264,
        batch_size=4, sequence_length=128,
    )
    ```
    """
    sizes = {
        "num_layers": num_layers,
        "hidden_dim": hidden_dim,
        "num_heads": num_heads,
        "intermediate_dim": intermediate_dim,
        "vocabulary_size": vocabulary_size,
        "batch_size": batch_size,
        "sequence_length": sequence_length,
        "total_params": total_params,
    }
    for name, value in sizes.items():
        if value < 1:
            raise ValueError(f"`{name}` must be a positive integer; got {value}.")
    if not 0 <= trainable_params <= total_params:
        raise ValueError(
            f"`trainable_params` must be between 0 and `total_params` ({total_params}); "
            f"got {trainable_params}."
        )
    if not 0 <= nf4_params <= total_params - trainable_params:
        raise ValueError(
            f"`nf4_params` must be between 0 and the frozen weights "
            f"({total_params - trainable_params}); got {nf4_params}."
        )
    if nf4_bits_per_weight is None:
        nf4_bits_per_weight = nf4_bits_per_weight_of()
    if frozen_dtype_bytes is None:
        frozen_dtype_bytes = weight_dtype_bytes
    frozen_float_params = total_params - trainable_params - nf4_params
    estimate = {
        "weights": round(
            trainable_params * weight_dtype_bytes
            + frozen_float_params * frozen_dtype_bytes
            + nf4_params * nf4_bits_per_weight / 8
        ),
        "gradients": trainable_params * weight_dtype_bytes,
        "optimizer_state": ADAMW_SLOTS * trainable_params * weight_dtype_bytes,
        "activations": _activation_bytes(
            num_layers=num_layers,
            hidden_dim=hidden_dim,
            num_heads=num_heads,
            intermediate_dim=intermediate_dim,
            vocabulary_size=vocabulary_size,
            batch_size=batch_size,
            sequence_length=sequence_length,
            compute_dtype_bytes=compute_dtype_bytes,
            dropout=dropout,
            remat=remat,
            loss_chunk=loss_chunk,
        ),
    }
    if dora_output_units:
        saved = (batch_size * sequence_length + 2) * dora_output_units  # outputs, norms, scales
        estimate["dora"] = (saved + 2 * dora_largest_kernel) * compute_dtype_bytes
    estimate["total"] = sum(estimate.values())
    return estimate


def _activation_bytes(
    *,
    num_layers,
    hidden_dim,
    num_heads,
    intermediate_dim,
    vocabulary_size,
    batch_size,
    sequence_length,
    compute_dtype_bytes,
    dropout,
    remat=False,
    loss_chunk=None,
):
    hidden = batch_size * sequence_length * hidden_dim  # one (batch, seq, hidden) tensor
    intermediate = batch_size * sequence_length * intermediate_dim  # (batch, seq, intermediate)
    scores = batch_size * num_heads * sequence_length**2  # (batch, heads, seq, seq)
    # A dropout saves its mask; after the attention softmax the matmul with the values also
    # needs the dropped probabilities, a third (batch, heads, seq, seq) tensor.
    masks = 1 if dropout else 0
    per_block = (
        2 * hidden  # the residual stream entering each of the two layer norms
        + 2 * hidden  # the two layer norm outputs (inputs of query/key/value and of the FFN)
        + 3 * hidden  # query, key, value: both operands of the two attention matmuls
        + (1 + 2 * masks) * scores  # softmax probabilities (+ dropout mask, dropped copy)
        + hidden  # attention context, the input of the attention output projection
        + 2 * intermediate  # GELU input and output (the input of the second FFN layer)
        + 2 * masks * hidden  # dropout masks on the attention and FFN residual branches
    )
    around_blocks = (
        masks * hidden  # the embedding dropout mask
        + 2 * hidden  # the final layer norm's input and output (the logits matmul's input)
    )
    logits = batch_size * min(loss_chunk or sequence_length, sequence_length) * vocabulary_size
    # (batch, seq or chunk, vocabulary)
    blocks = num_layers * hidden + per_block if remat else num_layers * per_block
    return (
        (blocks + around_blocks + logits) * compute_dtype_bytes
        + logits * LOSS_DTYPE_BYTES  # the softmax gradient the cross-entropy saves, float32
    )


def estimate_for_model(model, batch_size, sequence_length, remat=False, loss_chunk=None):
    """Estimate the training memory of a KerasHub GPT-2 model, as it is now (LoRA or not).

    The architecture comes from the backbone, the trainable and total weight counts from the
    model's weights (so LoRA, once applied, is counted), the dtypes from the backbone's dtype
    policy and its trainable weights (float32 adapters beside a bfloat16 frozen model).

    Args:
        model: a `keras_hub.models.GPT2CausalLM` or `keras_hub.models.GPT2Backbone`.
        batch_size, sequence_length: the shape of one batch of token ids.
        remat, loss_chunk: as in `estimate_training_memory`.

    Returns:
        The dict of `estimate_training_memory`.
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
    return estimate_training_memory(
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
        remat=remat,
        loss_chunk=loss_chunk,
    )


def stored_weight_bytes(model):
    """Bytes the model's variables take as stored, each once, in their own dtypes.

    NF4 kernels count as their packed codes and constants (about 4.127 bits a weight);
    float weights at their variable dtype's size. A measurement, beside the estimate.
    """
    backbone = surgery.find_backbone(model)
    return int(sum(math.prod(v.shape) * _dtype_bytes(v.dtype) for v in backbone.weights))


def _dtype_bytes(dtype):
    return np.dtype(keras.backend.standardize_dtype(dtype)).itemsize
