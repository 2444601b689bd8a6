"""Where the memory of a GPT-2 training step goes, from first principles, without Keras.

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

MixLoRA adds `mixlora`: its GELU cannot be shared, so each token's `k` chosen experts each save
a GELU input and output (batch x seq x intermediate), `2k` such tensors where the plain
feed-forward saves 2, and the routing-weighted sum that enters the shared output matmul.

Half precision (mixed precision or a half-precision frozen model): Keras's layer norms compute
in float32, so their saved tensors are float32 whatever the compute dtype; under a `mixed_`
policy every kernel is cast to the compute dtype at each call and the cast copy is what the
backward pass needs (a chunked loss casts the tied embedding once per chunk).

Not counted here: the framework's own share (workspace, what an unfused graph keeps beyond this
minimal set, the optimizer update's temporaries, the allocator's caching) and, on a CPU, the
runtime itself (Python and the TensorFlow/JAX/torch libraries). `lora_keras.planner.framework`
adds them, per backend, to make the planner's prediction of a measured peak.
"""

from lora_keras.nf4_format import nf4_bits_per_weight as nf4_bits_per_weight_of

# AdamW's first and second moment estimates, each the shape and dtype of its weight.
ADAMW_SLOTS = 2

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
    norm_dtype_bytes=4,
    kernel_casts=False,
    logits_copies=2,
    mixlora_top_k=0,
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
        norm_dtype_bytes: bytes per saved layer norm tensor (4: Keras's layer norms compute
            in float32 under every policy).
        kernel_casts: whether each float kernel is cast to the compute dtype at every call and
            the copy saved (a `mixed_` policy).
        logits_copies: logits-sized tensors alive at once at the loss: 2 where the
            cross-entropy is fused (the logits and the float32 softmax gradient), 3 where it is
            not (and the logits' gradient).
        mixlora_top_k: experts per token of MixLoRA feed-forward blocks (0: none).

    Returns:
        A dict of bytes: `weights`, `gradients`, `optimizer_state`, `activations`, with DoRA
        layers `dora`, with MixLoRA `mixlora`, and `total`, their sum. `explain_estimate` turns
        it into sentences.

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
            norm_dtype_bytes=norm_dtype_bytes,
            logits_copies=logits_copies,
        ),
    }
    if kernel_casts:
        chunks = -(-sequence_length // min(loss_chunk or sequence_length, sequence_length))
        casts = total_params - nf4_params + (chunks - 1) * vocabulary_size * hidden_dim
        estimate["activations"] += casts * compute_dtype_bytes
    if mixlora_top_k:
        tokens = batch_size * sequence_length
        # 2k GELU inputs and outputs instead of 2, and the weighted sum: (batch x seq x I) each.
        extra = (2 * mixlora_top_k - 1) * tokens * intermediate_dim
        estimate["mixlora"] = num_layers * extra * compute_dtype_bytes
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
    norm_dtype_bytes=4,
    logits_copies=2,
):
    hidden = batch_size * sequence_length * hidden_dim  # one (batch, seq, hidden) tensor
    intermediate = batch_size * sequence_length * intermediate_dim  # (batch, seq, intermediate)
    scores = batch_size * num_heads * sequence_length**2  # (batch, heads, seq, seq)
    # A dropout saves its mask; after the attention softmax the matmul with the values also
    # needs the dropped probabilities, a third (batch, heads, seq, seq) tensor.
    masks = 1 if dropout else 0
    # Layer norms compute in float32: their input and normalized output, in `norm_dtype_bytes`,
    # counted here in units of `compute_dtype_bytes`.
    norm = norm_dtype_bytes / compute_dtype_bytes
    per_block = (
        2 * hidden * norm  # the residual stream entering each of the two layer norms
        + 2 * hidden * norm  # the two layer norm outputs (inputs of query/key/value and the FFN)
        + 3 * hidden  # query, key, value: both operands of the two attention matmuls
        + (1 + 2 * masks) * scores  # softmax probabilities (+ dropout mask, dropped copy)
        + hidden  # attention context, the input of the attention output projection
        + 2 * intermediate  # GELU input and output (the input of the second FFN layer)
        + 2 * masks * hidden  # dropout masks on the attention and FFN residual branches
    )
    around_blocks = (
        masks * hidden  # the embedding dropout mask
        + 2 * hidden * norm  # the final layer norm's input and output (the logits' input)
    )
    logits = batch_size * min(loss_chunk or sequence_length, sequence_length) * vocabulary_size
    # (batch, seq or chunk, vocabulary)
    blocks = num_layers * hidden + per_block if remat else num_layers * per_block
    return round(
        (blocks + around_blocks + logits) * compute_dtype_bytes
        # the softmax gradient the cross-entropy saves, float32; unfused, the logits' gradient
        + (logits_copies - 1) * logits * LOSS_DTYPE_BYTES
    )
