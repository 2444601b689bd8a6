"""MixLoRA and MixDoRA blocks on their own: routing, experts, loss, statistics, contract."""

import keras
import numpy as np
import pytest
from keras import ops
from layer_test_case import count

import lora_keras as lk
from lora_keras.layers import mixlora_math

# Portable: CI runs this file again under jax and torch.
pytestmark = pytest.mark.backends

HIDDEN, INTERMEDIATE, EXPERTS, TOP_K, RANK = 16, 32, 4, 2, 3
numpy = ops.convert_to_numpy  # torch tensors that need grad refuse np.asarray


def frozen_pair(seed=0):
    keras.utils.set_random_seed(seed)
    dense_in = keras.layers.Dense(INTERMEDIATE, activation="gelu", name="ffn_in")
    dense_in.build((None, None, HIDDEN))
    dense_out = keras.layers.Dense(HIDDEN, name="ffn_out")
    dense_out.build((None, None, INTERMEDIATE))
    return dense_in, dense_out


def make_block(cls=lk.MixLoraFeedForward, **kwargs):
    settings = dict(num_experts=EXPERTS, top_k=TOP_K, rank=RANK, alpha=6.0)
    return cls(*frozen_pair(), **{**settings, **kwargs})


def randomize(block, seed=1):
    """Non-zero B's (and magnitudes away from the kernel norms) so the experts differ."""
    rng = np.random.default_rng(seed)
    for variable in block.adapter_weights().values():
        if variable.name != "kernel":  # the router keeps its own initialisation
            noise = rng.normal(0.0, 0.3, tuple(variable.shape)).astype("float32")
            variable.assign(variable.numpy() + noise)
    return block


def inputs(batch=2, length=5, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, length, HIDDEN)).astype("float32")


def dora_kernel(kernel, a, b, magnitude, scaling):
    updated = kernel + scaling * a @ b
    return magnitude * updated / np.linalg.norm(updated, axis=0)


def reference(block, x):
    """Each token through each of its chosen experts, one at a time, with explicit kernels."""
    x = x.reshape(-1, HIDDEN)
    logits = x @ block.router.kernel.numpy()
    probabilities = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    dense_in, dense_out = block.intermediate_dense, block.output_dense
    s = block.scaling
    outputs = np.zeros_like(x)
    for n in range(len(x)):
        chosen = np.argsort(-probabilities[n])[: block.top_k]
        weights = probabilities[n, chosen] / probabilities[n, chosen].sum()
        for e, w in zip(chosen, weights, strict=True):
            a_in, b_in = block.expert_in_a.numpy()[e], block.expert_in_b.numpy()[e]
            a_out, b_out = block.expert_out_a.numpy()[e], block.expert_out_b.numpy()[e]
            if isinstance(block, lk.MixDoraFeedForward):
                k_in = dora_kernel(
                    dense_in.kernel.numpy(), a_in, b_in, block.expert_in_magnitude.numpy()[e], s
                )
                k_out = dora_kernel(
                    dense_out.kernel.numpy(), a_out, b_out, block.expert_out_magnitude.numpy()[e], s
                )
            else:
                k_in = dense_in.kernel.numpy() + s * a_in @ b_in
                k_out = dense_out.kernel.numpy() + s * a_out @ b_out
            hidden = numpy(dense_in.activation(x[n] @ k_in + dense_in.bias.numpy()))
            outputs[n] += w * (hidden @ k_out + dense_out.bias.numpy())
    return outputs


@pytest.mark.parametrize("cls", [lk.MixLoraFeedForward, lk.MixDoraFeedForward])
def test_no_op_at_initialisation(cls):
    block = make_block(cls)
    x = inputs()
    expected = block.output_dense(block.intermediate_dense(x))
    np.testing.assert_allclose(numpy(block(x)), numpy(expected), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cls", [lk.MixLoraFeedForward, lk.MixDoraFeedForward])
def test_output_is_the_weighted_sum_of_the_chosen_experts(cls):
    block = randomize(make_block(cls))
    x = inputs()
    got = numpy(block(x)).reshape(-1, HIDDEN)
    plain = numpy(block.output_dense(block.intermediate_dense(x))).reshape(-1, HIDDEN)
    assert np.abs(got - plain).max() > 1e-2  # the experts really differ from the frozen block
    np.testing.assert_allclose(got, reference(block, x), rtol=1e-4, atol=1e-4)


def test_an_unchosen_expert_does_not_touch_a_token():
    block = randomize(make_block())
    x = inputs()
    logits = x.reshape(-1, HIDDEN) @ block.router.kernel.numpy()
    unchosen = np.argsort(logits[0])[0]  # token 0's least likely expert
    before = numpy(block(x)).reshape(-1, HIDDEN)
    b_out = block.expert_out_b.numpy()
    b_out[unchosen] += 1.0
    block.expert_out_b.assign(b_out)
    after = numpy(block(x)).reshape(-1, HIDDEN)
    np.testing.assert_array_equal(after[0], before[0])
    assert np.abs(after - before).max() > 0  # other tokens chose it


def test_routing_keeps_exactly_top_k_and_renormalises():
    logits = np.random.default_rng(0).normal(size=(10, EXPERTS)).astype("float32")
    probabilities, weights, indices = (
        numpy(t) for t in mixlora_math.top_k_routing(ops.convert_to_tensor(logits), TOP_K)
    )
    assert weights.shape == indices.shape == (10, TOP_K)
    for row in range(10):
        assert len(set(indices[row])) == TOP_K
        np.testing.assert_array_equal(sorted(indices[row]), sorted(np.argsort(-logits[row])[:2]))
        chosen = probabilities[row, indices[row]]
        np.testing.assert_allclose(weights[row], chosen / chosen.sum(), rtol=1e-6)
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-6)


def test_top_k_and_dense_routing_agree():
    block = randomize(make_block())
    x = inputs().reshape(-1, HIDDEN)
    _, weights, indices = mixlora_math.top_k_routing(block.router(x), TOP_K)
    dense_in, dense_out = block.intermediate_dense, block.output_dense
    frozen = mixlora_math.FrozenFeedForward(
        dense_in.kernel, dense_in.bias, dense_out.kernel, dense_out.bias, dense_in.activation
    )
    args = (x, weights, indices, frozen, block.expert_factors(), block.scaling)
    np.testing.assert_allclose(
        numpy(mixlora_math.top_k_mixture(*args)),
        numpy(mixlora_math.dense_mixture(*args)),
        rtol=1e-4,
        atol=1e-5,
    )


def test_dora_column_norms_match_the_explicit_kernels():
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(HIDDEN, INTERMEDIATE)).astype("float32")
    a = rng.normal(size=(EXPERTS, HIDDEN, RANK)).astype("float32")
    b = rng.normal(size=(EXPERTS, RANK, INTERMEDIATE)).astype("float32")
    expected = np.linalg.norm(kernel[None] + 0.5 * a @ b, axis=1)
    got = mixlora_math.dora_column_norms(kernel, a, b, 0.5)
    np.testing.assert_allclose(numpy(got), expected, rtol=1e-4)


def hand_set_router(block):
    """Token n prefers expert n % E, then expert (n + 1) % E, by a wide margin."""
    kernel = np.zeros((HIDDEN, EXPERTS), "float32")
    for e in range(EXPERTS):
        kernel[e, e] = 4.0
        kernel[e, (e + 1) % EXPERTS] = 2.0
    block.router.kernel.assign(kernel)
    x = np.zeros((1, 6, HIDDEN), "float32")
    for n in range(6):
        x[0, n, n % EXPERTS] = 1.0
    return x


def expected_balance(x, kernel, mask, scope="model"):
    """`coef * E * sum_i f_i p_i` written out with numpy, over the tokens where mask is 1: `f_i`
    the share of tokens choosing expert i (summing to k); per block, divided by k."""
    logits = x.reshape(-1, HIDDEN)[mask.reshape(-1) == 1] @ kernel
    probabilities = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    chosen = np.argsort(-probabilities, axis=-1)[:, :TOP_K]
    fractions = np.bincount(chosen.reshape(-1), minlength=EXPERTS) / len(chosen)
    balance = 0.01 * EXPERTS * np.sum(fractions * probabilities.mean(0))
    return balance / TOP_K if scope == "block" else balance


@pytest.mark.parametrize("scope", ["model", "block"])
def test_aux_loss_by_its_formula_on_a_hand_set_router(scope):
    block = make_block(aux_loss_coef=0.01, aux_loss_scope=scope)
    x = hand_set_router(block)
    block(x)
    loss = numpy(block.losses[0])
    mask = np.ones((1, 6))
    expected = expected_balance(x, block.router.kernel.numpy(), mask, scope)
    np.testing.assert_allclose(loss, expected, 1e-5)
    # By hand: tokens 0-5 choose (0,1) (1,2) (2,3) (3,0) (0,1) (1,2): f = (3, 4, 3, 2) / 6.
    logits = np.array([4.0, 2.0, 0.0, 0.0])
    p_top = np.exp(logits) / np.exp(logits).sum()
    # Token n has p_top rolled by n; p_i is the mean over the 6 tokens.
    p = np.mean([np.roll(p_top, n % EXPERTS) for n in range(6)], axis=0)
    f = np.array([3, 4, 3, 2]) / 6
    by_hand = 0.01 * EXPERTS * np.sum(f * p) / (TOP_K if scope == "block" else 1)
    np.testing.assert_allclose(loss, by_hand, rtol=1e-5)


def test_padding_is_left_out_of_the_loss_and_the_counts():
    block = make_block(aux_loss_coef=0.01)
    x = hand_set_router(block)
    mask = np.array([[1, 1, 1, 1, 0, 0]], "int32")
    block(x, padding_mask=mask, training=True)
    np.testing.assert_allclose(
        numpy(block.losses[0]), expected_balance(x, block.router.kernel.numpy(), mask), rtol=1e-5
    )
    # Tokens 0-3 choose (0,1) (1,2) (2,3) (3,0): two choices each expert; padding adds none.
    np.testing.assert_array_equal(block.expert_counts.numpy(), [2, 2, 2, 2])
    block(x, padding_mask=mask)  # not training: no counting
    np.testing.assert_array_equal(block.expert_counts.numpy(), [2, 2, 2, 2])


@pytest.mark.parametrize(
    "cls, variant_weights",
    [(lk.MixLoraFeedForward, 0), (lk.MixDoraFeedForward, EXPERTS * (INTERMEDIATE + HIDDEN))],
)
def test_layer_contract(cls, variant_weights, tmp_path):
    block = randomize(make_block(cls, dropout=0.1))
    x = inputs()
    y = block(x)
    assert tuple(y.shape) == x.shape
    experts = EXPERTS * (HIDDEN * RANK + RANK * INTERMEDIATE + INTERMEDIATE * RANK + RANK * HIDDEN)
    assert count(block.trainable_weights) == HIDDEN * EXPERTS + experts + variant_weights
    frozen = HIDDEN * INTERMEDIATE + INTERMEDIATE + INTERMEDIATE * HIDDEN + HIDDEN
    assert count(block.non_trainable_weights) == frozen + EXPERTS  # + expert_counts
    assert {id(v) for v in block.adapter_weights().values()} == {
        id(v) for v in block.trainable_weights
    }

    clone = cls.from_config(block.get_config())
    assert clone.get_config() == block.get_config()

    inputs_ = keras.Input(shape=x.shape[1:])
    model = keras.Model(inputs_, block(inputs_))
    model.save(tmp_path / "block.keras")
    restored = keras.saving.load_model(tmp_path / "block.keras")
    np.testing.assert_allclose(numpy(restored(x)), numpy(model(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(top_k=5), "top_k must be an integer from 1 to num_experts=4, got top_k=5"),
        (dict(num_experts=0, top_k=1), "MixLoRA needs at least 1 expert, got num_experts=0"),
        (dict(rank=17), "MixLoRA rank 17 is larger than the smallest dimension (16)"),
        (dict(rank=0), "MixLoRA rank must be an integer of at least 1, got rank=0"),
        (dict(dropout=1.0), "MixLoRA dropout must be in [0, 1), got dropout=1.0"),
        (dict(dropout=float("nan")), "MixLoRA dropout must be in [0, 1), got dropout=nan"),
        (dict(alpha=float("nan")), "MixLoRA alpha must be a finite number above 0"),
        (dict(alpha=-1.0), "MixLoRA alpha must be a finite number above 0"),
        (dict(aux_loss_coef=-0.1), "MixLoRA aux_loss_coef must be a finite number of at least 0"),
        (dict(aux_loss_coef=float("nan")), "aux_loss_coef must be a finite number of at least 0"),
        (dict(aux_loss_scope="layer"), "Unknown aux_loss_scope 'layer': use one of model, block"),
    ],
)
def test_bad_settings_are_refused(kwargs, message):
    dense_in, dense_out = frozen_pair()
    with pytest.raises(ValueError) as error:
        lk.MixLoraFeedForward(dense_in, dense_out, **{"num_experts": 4, **kwargs})
    assert message in str(error.value)
    assert dense_in.trainable and dense_out.trainable  # a refused block froze nothing


def test_a_non_dense_layer_is_refused():
    dense_in, dense_out = frozen_pair()
    wrapped = lk.LoraDense(dense_in, rank=2)
    with pytest.raises(ValueError, match="must be a plain keras.layers.Dense, got LoraDense"):
        lk.MixLoraFeedForward(wrapped, dense_out)
