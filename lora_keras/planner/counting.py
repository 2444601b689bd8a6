"""How many weights each training mode holds and trains, counted from the architecture alone.

No model is built: the counts follow the shapes of KerasHub's `GPT2Backbone` and of this
package's adapters, and `tests/test_planner_counting.py` checks them against
`lk.trainable_summary` of built tiny models for every mode.

Per transformer block (hidden H, intermediate I, heads h):
- two layer norms (scale and offset, H each) and the query, key, value and attention output
  projections (an H x H kernel and H biases each);
- the feed-forward layers: H x I kernel and I biases in, I x H kernel and H biases out.
Around the blocks: the token embedding (vocabulary x H, tied to the output projection, so
counted once), the position embedding (max sequence length x H) and the final layer norm.
"""

# (input units, output units) of each projection LoRA can wrap, from (hidden, intermediate).
PROJECTIONS = {
    "query": lambda hidden, intermediate: (hidden, hidden),
    "key": lambda hidden, intermediate: (hidden, hidden),
    "value": lambda hidden, intermediate: (hidden, hidden),
    "attention_output": lambda hidden, intermediate: (hidden, hidden),
    "ffn_in": lambda hidden, intermediate: (hidden, intermediate),
    "ffn_out": lambda hidden, intermediate: (intermediate, hidden),
}
MODES = ("full", "lora", "keras_lora", "dora", "qlora", "mixlora")


def backbone_params(arch):
    """Every weight of a plain GPT-2 backbone of the shapes `arch` (a `GPT2_ARCHITECTURES` row)."""
    hidden, intermediate = arch["hidden_dim"], arch["intermediate_dim"]
    per_block = (
        2 * 2 * hidden  # two layer norms
        + 4 * (hidden * hidden + hidden)  # query, key, value, attention output
        + hidden * intermediate
        + intermediate  # feed-forward in
        + intermediate * hidden
        + hidden  # feed-forward out
    )
    embeddings = (arch["vocabulary_size"] + arch["max_sequence_length"]) * hidden
    return embeddings + arch["num_layers"] * per_block + 2 * hidden  # final layer norm


def block_kernel_params(arch):
    """The weights of the block kernels, the six projections QLoRA stores as NF4."""
    hidden, intermediate = arch["hidden_dim"], arch["intermediate_dim"]
    return arch["num_layers"] * (4 * hidden * hidden + 2 * hidden * intermediate)


def adapter_params(arch, rank, targets, dora=False):
    """LoRA's A (input x rank) and B (rank x output) per target per block; DoRA adds a
    trainable magnitude per output unit. Returns `(trainable, output_units)`: DoRA also keeps a
    frozen `merged_norm` per output unit, weights that do not train."""
    trainable = outputs_total = 0
    for target in targets:
        inputs, outputs = PROJECTIONS[target](arch["hidden_dim"], arch["intermediate_dim"])
        trainable += inputs * rank + rank * outputs + (outputs if dora else 0)
        outputs_total += outputs
    return arch["num_layers"] * trainable, arch["num_layers"] * outputs_total


def keras_lora_params(arch, rank):
    """Keras's `enable_lora` on query and value: it factorizes the kernel's last axis only, A
    (hidden, heads, rank) and B (rank, head_dim), and leaves the layer's bias trainable."""
    hidden, heads = arch["hidden_dim"], arch["num_heads"]
    per_layer = hidden * heads * rank + rank * (hidden // heads) + hidden
    return arch["num_layers"] * 2 * per_layer


def mixlora_params(arch, num_experts, rank, variant="lora"):
    """MixLoRA per block: each expert's LoRA on both feed-forward layers, the router (hidden x
    experts); MixDoRA adds each expert's magnitudes. Returns `(trainable, non_trainable)`:
    the per-expert token counts are weights that do not train."""
    hidden, intermediate = arch["hidden_dim"], arch["intermediate_dim"]
    expert = 2 * (hidden * rank + rank * intermediate)  # in: H x r, r x I; out: I x r, r x H
    if variant == "dora":
        expert += intermediate + hidden
    trainable = num_experts * expert + hidden * num_experts
    return arch["num_layers"] * trainable, arch["num_layers"] * num_experts


def count_params(arch, mode, rank=4, targets=("query", "value"), mixlora=None):
    """The weights of `mode` on the architecture `arch`, without building it.

    Args:
        arch: a `GPT2_ARCHITECTURES` row.
        mode: one of `MODES`.
        rank, targets: LoRA's (modes lora, dora, qlora; keras_lora takes the rank only).
        mixlora: MixLoRA's settings (`num_experts`, `rank`, `variant`), defaults filled in.

    Returns:
        `{"trainable", "total", "nf4"}`: weights that train, all weights, and the frozen
        weights stored as NF4 (QLoRA's block kernels).

    Example: `count_params(GPT2_ARCHITECTURES["gpt2_base_en"], "lora")["trainable"]` is
    12 * 2 * (768*4 + 4*768) = 147,456.
    """
    if mode not in MODES:
        raise ValueError(f"Unknown mode {mode!r}. Known modes: {', '.join(MODES)}.")
    base = backbone_params(arch)
    nf4 = 0
    if mode == "full":
        trainable, extra = base, 0
    elif mode == "keras_lora":
        trainable = keras_lora_params(arch, rank)
        # The biases it leaves trainable are the model's own weights, not added ones.
        extra = trainable - 2 * arch["num_layers"] * arch["hidden_dim"]
    elif mode == "mixlora":
        trainable, counts = mixlora_params(
            arch, mixlora["num_experts"], mixlora["rank"], mixlora.get("variant", "lora")
        )
        extra = trainable + counts
    else:
        dora = mode == "dora"
        trainable, outputs = adapter_params(arch, rank, targets, dora=dora)
        extra = trainable + (outputs if dora else 0)  # DoRA's merged norms
        nf4 = block_kernel_params(arch) if mode == "qlora" else 0
    return {"trainable": trainable, "total": base + extra, "nf4": nf4}
