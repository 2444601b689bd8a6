"""The arithmetic of a mixture of LoRA experts on one frozen feed-forward block, as pure functions.

Shapes: `N` tokens, `D` hidden size, `I` intermediate size, `E` experts, `k`
experts chosen a token, `r` the LoRA rank. Every expert `e` computes
`ffn_out_e(act(ffn_in_e(x)))`, where `ffn_in_e` and `ffn_out_e` are the shared
frozen kernels plus expert `e`'s low-rank updates. The frozen products are
shared: `x @ W_in` runs once for all experts and, for LoRA experts, the chosen
experts' activations are summed before the one `@ W_out`.
"""

import collections

from keras import ops

# The frozen block: kernels, biases (or None) and the activation between them.
FrozenFeedForward = collections.namedtuple(
    "FrozenFeedForward", ["in_kernel", "in_bias", "out_kernel", "out_bias", "activation"]
)
# Every expert's factors, stacked: in_a (E, D, r), in_b (E, r, I), out_a (E, I, r), out_b (E, r, D).
ExpertFactors = collections.namedtuple("ExpertFactors", ["in_a", "in_b", "out_a", "out_b"])


def top_k_routing(logits, top_k):
    """Softmax over experts, keep the `top_k` largest, renormalise them to sum to 1.

    Args:
        logits: `(N, E)` router logits.
        top_k: experts a token goes to.

    Returns:
        `(probabilities (N, E), weights (N, k), indices (N, k))`.
    """
    probabilities = ops.softmax(logits, axis=-1)
    top_probabilities, indices = ops.top_k(probabilities, top_k)
    weights = top_probabilities / ops.sum(top_probabilities, axis=-1, keepdims=True)
    return probabilities, weights, indices


def routing_statistics(probabilities, indices, mask):
    """What a load-balance loss needs of one block's routing, summed over its real tokens.

    Args:
        probabilities: `(N, E)` float32 router probabilities.
        indices: `(N, k)` chosen experts.
        mask: `(N,)` float32, 1 for a real token and 0 for padding.

    Returns:
        `RoutingStatistics(counts (E,), probability_sums (E,), tokens ())`: the
        (token, slot) choices of each expert, the summed probability of each
        expert, and the number of real tokens. Only the probabilities carry a
        gradient: the choices are counted, as in the Switch Transformer.
    """
    num_experts = ops.shape(probabilities)[-1]
    chosen = ops.one_hot(indices, num_experts, dtype="float32")  # (N, k, E)
    counts = ops.sum(chosen * mask[:, None, None], axis=(0, 1))  # (E,)
    probability_sums = ops.sum(probabilities * mask[:, None], axis=0)  # (E,)
    return RoutingStatistics(counts, probability_sums, ops.sum(mask))


# Where the load-balance loss is taken: over every block of a model at once, or a block alone.
BALANCE_SCOPES = ("model", "block")
RoutingStatistics = collections.namedtuple(
    "RoutingStatistics", ["counts", "probability_sums", "tokens"]
)


def load_balance(statistics, top_k, scope):
    """The load-balance loss of the routing `statistics` (summed over one block, or over all).

    With `f_e` the fraction of tokens whose k choices include expert `e` (so `sum_e f_e = k`)
    and `p_e` expert `e`'s mean router probability, over the real tokens:
    - `scope="model"`: `E * sum_e f_e p_e` over the tokens of every block pooled, the
      Mixtral loss the MixLoRA reference adds once per model (`k` when balanced);
    - `scope="block"`: the same over one block's tokens, divided by `k` (1 when balanced),
      the Switch Transformer's per-layer normalisation, which lora_keras 0.1.0 added per block.

    Returns:
        A float32 scalar.
    """
    counts, probability_sums, tokens = statistics
    tokens = ops.maximum(tokens, 1.0)
    num_experts = ops.cast(ops.shape(counts)[0], "float32")
    pooled = num_experts * ops.sum(counts * probability_sums) / (tokens * tokens)
    return pooled / top_k if scope == "block" else pooled


def dora_column_norms(kernel, a, b, scaling):
    """`||W + s A_e B_e||` over the input axis for every expert, without forming the kernels.

    `||v||^2 = ||W||^2 + 2 s (W^T A_e) . B_e + s^2 B_e^T (A_e^T A_e) B_e`, column
    by column: about `E r D I` multiply-adds instead of `E` full kernels of
    `D I` values each. Detached, as DoRA prescribes, so the backward pass never
    differentiates it.

    Args:
        kernel: `(D, I)` frozen kernel. a: `(E, D, r)`. b: `(E, r, I)`.
        scaling: the LoRA scale `s`.

    Returns:
        `(E, I)` column norms.
    """
    kernel, a, b = (ops.stop_gradient(ops.cast(t, "float32")) for t in (kernel, a, b))
    base = ops.sum(ops.square(kernel), axis=0)  # (I,)
    kernel_a = ops.einsum("di,edr->eir", kernel, a)  # (E, I, r)
    cross = ops.einsum("eir,eri->ei", kernel_a, b)
    gram = ops.einsum("edr,eds->ers", a, a)  # (E, r, r)
    quadratic = ops.sum(b * ops.einsum("ers,esi->eri", gram, b), axis=1)  # (E, I)
    squared = base[None] + 2.0 * scaling * cross + scaling**2 * quadratic
    return ops.sqrt(ops.maximum(squared, 1e-12))


def _stacked_a(a):
    """`(E, fan_in, r)` factors as one `(fan_in, E r)` matrix: every expert's A in one matmul."""
    experts, fan_in, rank = (int(d) for d in a.shape)
    return ops.reshape(ops.transpose(a, (1, 0, 2)), (fan_in, experts * rank))


def _stacked_b(b):
    """`(E, r, fan_out)` factors as one `(E r, fan_out)` matrix."""
    experts, rank, fan_out = (int(d) for d in b.shape)
    return ops.reshape(b, (experts * rank, fan_out))


def top_k_mixture(x, weights, indices, frozen, experts, scaling, scales=None, dropout=None):
    """The block's output, passing only the `k` chosen experts of each token through the GELU.

    Every product is a plain 2-D matmul. The rank-sized products run for all
    experts at once against the stacked factors (`(N, D) @ (D, E r)`, cheap);
    a one-hot mask keeps each slot's chosen expert, so the `B` products are
    `(N k, E r) @ (E r, I)` and no tensor is ever `(N, E, I)`: the full-width
    ones are `(N, k, I)`. benchmarks/mixlora_routing.py measures this against
    `dense_mixture`.

    Args:
        x: `(N, D)` inputs. weights: `(N, k)`, summing to 1. indices: `(N, k)`.
        frozen: a `FrozenFeedForward`. experts: an `ExpertFactors`.
        scaling: the LoRA scale `s`.
        scales: None for LoRA experts; for DoRA experts `(in_scale (E, I),
            out_scale (E, D))`, each magnitude over its column norm.
        dropout: None, or a callable applied to each LoRA branch's input.

    Returns:
        `(N, D)` outputs.
    """
    dropout = dropout or (lambda t: t)
    num_experts, rank = (int(d) for d in experts.in_b.shape[:2])
    top_k = int(indices.shape[-1])
    intermediate, hidden = (int(d) for d in frozen.out_kernel.shape)
    one_hot = ops.one_hot(indices, num_experts, dtype=x.dtype)  # (N, k, E)
    # Shared: the frozen input projection, once for every expert.
    base_in = ops.matmul(x, frozen.in_kernel)  # (N, I)
    low_in = ops.matmul(dropout(x), _stacked_a(experts.in_a)) * scaling  # (N, E r)
    low_in = ops.reshape(low_in, (-1, 1, num_experts, rank)) * one_hot[..., None]  # (N, k, E, r)
    update_in = ops.matmul(ops.reshape(low_in, (-1, num_experts * rank)), _stacked_b(experts.in_b))
    hidden_states = base_in[:, None] + ops.reshape(update_in, (-1, top_k, intermediate))
    if scales is not None:
        hidden_states = hidden_states * ops.einsum("nke,ei->nki", one_hot, scales[0])
    if frozen.in_bias is not None:
        hidden_states = hidden_states + frozen.in_bias
    activations = frozen.activation(hidden_states)  # (N, k, I): the GELU cannot be shared
    low_out = ops.matmul(
        ops.reshape(dropout(activations), (-1, intermediate)), _stacked_a(experts.out_a)
    )
    low_out = ops.reshape(low_out, (-1, top_k, num_experts, rank)) * scaling  # (N, k, E, r)
    out_b = _stacked_b(experts.out_b)  # (E r, D)
    if scales is None:
        # LoRA: sum_k w_k (a_k W + s a_k A_k B_k) = (sum_k w_k a_k) W + ..., one shared matmul.
        combined = ops.einsum("nk,nki->ni", weights, activations)
        chosen = ops.sum(low_out * (one_hot * weights[..., None])[..., None], axis=1)  # (N, E, r)
        outputs = ops.matmul(combined, frozen.out_kernel)
        outputs = outputs + ops.matmul(ops.reshape(chosen, (-1, num_experts * rank)), out_b)
    else:
        # DoRA: each expert scales its output columns, so the frozen product runs k times.
        chosen = ops.reshape(low_out * one_hot[..., None], (-1, num_experts * rank))
        per_slot = ops.matmul(ops.reshape(activations, (-1, intermediate)), frozen.out_kernel)
        per_slot = ops.reshape(per_slot + ops.matmul(chosen, out_b), (-1, top_k, hidden))
        per_slot = per_slot * ops.einsum("nke,ed->nkd", one_hot, scales[1])
        outputs = ops.einsum("nk,nkd->nd", weights, per_slot)
    if frozen.out_bias is not None:
        outputs = outputs + frozen.out_bias
    return outputs


def dense_mixture(x, weights, indices, frozen, experts, scaling):
    """The same output as `top_k_mixture` for LoRA experts, computing every expert.

    Unchosen experts get weight 0, so every full-width tensor is `(N, E, I)`.
    Kept as the measured alternative (benchmarks/mixlora_routing.py) and as
    an independent check of `top_k_mixture` in the tests.
    """
    num_experts = ops.shape(experts.in_a)[0]
    dense_weights = ops.einsum("nk,nke->ne", weights, ops.one_hot(indices, num_experts))
    low_in = ops.einsum("nd,edr->ner", x, experts.in_a) * scaling
    hidden = ops.matmul(x, frozen.in_kernel)[:, None] + ops.einsum(
        "ner,eri->nei", low_in, experts.in_b
    )
    if frozen.in_bias is not None:
        hidden = hidden + frozen.in_bias
    activations = frozen.activation(hidden)  # (N, E, I)
    combined = ops.einsum("ne,nei->ni", dense_weights, activations)
    low_out = ops.einsum("nei,eir->ner", activations, experts.out_a) * scaling
    outputs = ops.matmul(combined, frozen.out_kernel) + ops.einsum(
        "ner,erd->nd", low_out * dense_weights[..., None], experts.out_b
    )
    if frozen.out_bias is not None:
        outputs = outputs + frozen.out_bias
    return outputs
