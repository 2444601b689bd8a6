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


def load_balance(probabilities, indices, mask):
    """The Switch-Transformer balance term `E * sum_i f_i * p_i`, and the routed counts.

    `f_i` is the fraction of routed (token, slot) choices that went to expert
    `i` and `p_i` the mean router probability of expert `i`, both over the
    tokens where `mask` is 1 (padding is 0). `f` counts choices, so only `p`
    carries a gradient, as in the Switch Transformer.

    Args:
        probabilities: `(N, E)` float32 router probabilities.
        indices: `(N, k)` chosen experts.
        mask: `(N,)` float32, 1 for a real token and 0 for padding.

    Returns:
        `(balance, counts)`: a scalar (1.0 when perfectly balanced) and the
        `(E,)` number of (token, slot) choices of each expert.
    """
    num_experts = ops.shape(probabilities)[-1]
    chosen = ops.one_hot(indices, num_experts, dtype="float32")  # (N, k, E)
    counts = ops.sum(chosen * mask[:, None, None], axis=(0, 1))  # (E,)
    tokens = ops.maximum(ops.sum(mask), 1.0)
    fractions = counts / ops.maximum(ops.sum(counts), 1.0)
    mean_probabilities = ops.sum(probabilities * mask[:, None], axis=0) / tokens
    balance = ops.cast(num_experts, "float32") * ops.sum(fractions * mean_probabilities)
    return balance, counts


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


def top_k_mixture(x, weights, indices, frozen, experts, scaling, scales=None, dropout=None):
    """The block's output, passing only the `k` chosen experts of each token through the GELU.

    Rank-sized products run for every expert (cheap); the input-side update
    `(x A_e) B_e` is formed for every expert as a transient `(N, E, I)` tensor
    (its backward needs only `x A_e` and `B_e`) of which the chosen `k` are
    kept, so the GELU, its saved inputs and the output side see `(N, k, I)`.
    For LoRA experts the output side dispatches the weighted activations to
    their experts, `(N, E, I)` and zero for the unchosen, which the backward
    of the low-rank product keeps. benchmarks/mixlora_routing.py measures this
    against `dense_mixture`; on a CPU it was the faster of the ways we tried.

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
    num_experts = ops.shape(experts.in_a)[0]
    one_hot = ops.one_hot(indices, num_experts, dtype=x.dtype)  # (N, k, E)
    # Shared: the frozen input projection, once for every expert.
    base_in = ops.matmul(x, frozen.in_kernel)  # (N, I)
    low_in = ops.einsum("nd,edr->ner", dropout(x), experts.in_a) * scaling  # (N, E, r)
    update_in = ops.einsum("ner,eri->nei", low_in, experts.in_b)  # transient
    hidden = base_in[:, None] + ops.einsum("nke,nei->nki", one_hot, update_in)  # (N, k, I)
    if scales is not None:
        hidden = hidden * ops.einsum("nke,ei->nki", one_hot, scales[0])
    if frozen.in_bias is not None:
        hidden = hidden + frozen.in_bias
    activations = frozen.activation(hidden)  # (N, k, I): the GELU cannot be shared
    if scales is None:
        # LoRA: sum_k w_k (a_k W + s a_k A_k B_k) = (sum_k w_k a_k) W + ..., one shared matmul.
        combined = ops.einsum("nk,nki->ni", weights, activations)
        dispatched = ops.einsum("nke,nk,nki->nei", one_hot, weights, dropout(activations))
        low_out = ops.einsum("nei,eir->ner", dispatched, experts.out_a) * scaling
        outputs = ops.matmul(combined, frozen.out_kernel)
        outputs = outputs + ops.einsum("ner,erd->nd", low_out, experts.out_b)
    else:
        # DoRA: each expert scales its output columns, so the frozen product runs k times.
        low_out = ops.einsum("nki,eir->nker", dropout(activations), experts.out_a)
        low_out = ops.sum(low_out * one_hot[..., None], axis=2) * scaling  # (N, k, r)
        per_slot = ops.matmul(activations, frozen.out_kernel)  # (N, k, D)
        per_slot = per_slot + ops.einsum("nkr,nke,erd->nkd", low_out, one_hot, experts.out_b)
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
