"""DoRA wrappers against the paper's formula, written out in numpy."""

import math

import keras
import numpy as np
import pytest
from conftest import randomize_lora_b
from layer_test_case import run_layer_test
from test_lora_layers import built_attention_output, built_dense, built_query

import lora_keras as lk

# Portable: CI runs this file again under jax and torch.
pytestmark = pytest.mark.backends

# Each case: a wrapper, its input shape, the wrapped einsum, A times B, and its input axes.
CASES = {
    "query": (
        lambda: lk.DoraEinsumDense(built_query(), rank=4, alpha=8.0),
        (2, 5, 64),
        "abc,cde->abde",
        "cr,rde->cde",
        (0,),
    ),
    "attention_output": (
        lambda: lk.DoraEinsumDense(built_attention_output(), rank=4, alpha=8.0),
        (2, 5, 4, 16),
        "abcd,cde->abe",
        "cdr,re->cde",
        (0, 1),
    ),
    "ffn_in": (
        lambda: lk.DoraDense(built_dense(units=128, activation="gelu"), rank=4, alpha=8.0),
        (2, 5, 64),
        "abc,cd->abd",
        "cr,rd->cd",
        (0,),
    ),
}


def run(layer, x, **kwargs):
    """The layer's output as numpy, on any backend."""
    return keras.ops.convert_to_numpy(layer(x, **kwargs))


def trained(layer, seed=0):
    """Non-zero B and a magnitude moved off its initial value, as after training."""
    randomize_lora_b([layer], seed=seed)
    rng = np.random.default_rng(seed + 1)
    magnitude = layer.magnitude.numpy()
    layer.magnitude.assign(magnitude * rng.uniform(0.5, 1.5, magnitude.shape).astype("float32"))
    return layer


def gelu(x):
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / np.sqrt(2.0)))


def dora_formula(layer, x, equation, a_times_b, input_axes):
    """`x (m V / ||V||) + b`, `V = W + s A B`, then the activation: the paper's formula."""
    original = layer.original_layer
    a, b = layer.lora_kernel_a.numpy(), layer.lora_kernel_b.numpy()
    v = original.kernel.numpy() + layer.scaling * np.einsum(a_times_b, a, b)
    norm = np.sqrt(np.sum(v**2, axis=input_axes))
    outputs = np.einsum(equation, x, layer.magnitude.numpy() * v / norm)
    outputs = outputs + original.bias.numpy()
    return gelu(outputs) if original.activation is keras.activations.gelu else outputs


@pytest.mark.parametrize("target", CASES)
def test_matches_the_formula_with_nonzero_b_and_a_changed_magnitude(target):
    make, input_shape, equation, a_times_b, input_axes = CASES[target]
    layer = trained(make())
    x = np.random.default_rng(1).normal(size=input_shape).astype("float32")
    expected = dora_formula(layer, x, equation, a_times_b, input_axes)
    assert np.abs(expected - run(layer.original_layer, x)).max() > 1e-2
    np.testing.assert_allclose(run(layer, x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("target", CASES)
def test_magnitude_starts_as_the_kernel_norm_and_the_layer_as_a_no_op(target):
    make, input_shape, _, _, input_axes = CASES[target]
    layer = make()
    kernel = layer.original_layer.kernel.numpy()
    output_shape = tuple(np.delete(kernel.shape, input_axes))
    assert tuple(layer.magnitude.shape) == output_shape == layer.equations.output_dims
    norm = np.sqrt(np.sum(kernel**2, axis=input_axes))
    np.testing.assert_allclose(layer.magnitude.numpy(), norm, rtol=1e-6)
    x = np.random.default_rng(2).normal(size=input_shape).astype("float32")
    np.testing.assert_array_equal(run(layer, x), run(layer.original_layer, x))


@pytest.mark.parametrize("target", CASES)
def test_merge_and_unmerge_are_exact(target):
    make, input_shape, _, _, input_axes = CASES[target]
    layer = trained(make())
    kernel = layer.original_layer.kernel
    before = kernel.numpy().copy()
    x = np.random.default_rng(3).normal(size=input_shape).astype("float32")
    unmerged = run(layer, x)
    assert np.abs(unmerged - run(layer.original_layer, x)).max() > 1e-2
    layer.merge()
    # The merged kernel is m V / ||V||: each output unit's norm is its magnitude.
    merged_norms = np.sqrt(np.sum(kernel.numpy() ** 2, axis=input_axes))
    np.testing.assert_allclose(merged_norms, layer.magnitude.numpy(), rtol=1e-5)
    np.testing.assert_allclose(run(layer, x), unmerged, rtol=1e-5, atol=1e-5)
    layer.unmerge()
    np.testing.assert_allclose(kernel.numpy(), before, rtol=0, atol=1e-6)
    np.testing.assert_allclose(run(layer, x), unmerged, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="is not merged: there is nothing to unmerge"):
        layer.unmerge()


def test_query_layer_contract(tmp_path):
    run_layer_test(
        lambda: trained(lk.DoraEinsumDense(built_query(), rank=4)),
        input_shape=(2, 5, 64),
        expected_output_shape=(2, 5, 4, 16),
        # A, B, and one magnitude per output unit (4 heads x 16).
        expected_trainable=64 * 4 + 4 * 4 * 16 + 4 * 16,
        # Kernel, bias, and the norm kept for unmerging.
        expected_non_trainable=64 * 64 + 64 + 4 * 16,
        tmp_path=tmp_path,
    )


def test_attention_output_layer_contract(tmp_path):
    run_layer_test(
        lambda: trained(lk.DoraEinsumDense(built_attention_output(), rank=2)),
        input_shape=(2, 5, 4, 16),
        expected_output_shape=(2, 5, 64),
        expected_trainable=4 * 16 * 2 + 2 * 64 + 64,
        expected_non_trainable=64 * 64 + 64 + 64,
        tmp_path=tmp_path,
    )


def test_dense_layer_contract(tmp_path):
    run_layer_test(
        lambda: trained(lk.DoraDense(built_dense(), rank=3, dropout=0.1)),
        input_shape=(2, 5, 64),
        expected_output_shape=(2, 5, 128),
        expected_trainable=64 * 3 + 3 * 128 + 128,
        expected_non_trainable=64 * 128 + 128 + 128,
        tmp_path=tmp_path,
    )


def test_names_variant_and_adapter_weights():
    layer = lk.DoraEinsumDense(built_query(), rank=4)
    assert layer.name.endswith("_dora") and layer.variant == "dora"
    assert list(layer.adapter_weights()) == ["lora_kernel_a", "lora_kernel_b", "magnitude"]
    trainable = sorted(v.path.split("/")[-1] for v in layer.trainable_weights)
    assert trainable == ["lora_kernel_a", "lora_kernel_b", "magnitude"]
    assert lk.LoraEinsumDense(built_query(), rank=4).variant == "lora"


def gradients(layer, x, upstream):
    """`{name: d sum(layer(x) * upstream) / d weight}` for the layer's trainable weights."""
    backend = keras.config.backend()
    names = [v.path.split("/")[-1] for v in layer.trainable_weights]
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(x) * upstream)
        grads = tape.gradient(loss, [v.value for v in layer.trainable_weights])
    elif backend == "jax":
        import jax

        def loss(trainable):
            outputs, _ = layer.stateless_call(
                trainable, [v.value for v in layer.non_trainable_weights], x
            )
            return (outputs * upstream).sum()

        grads = jax.grad(loss)([v.value for v in layer.trainable_weights])
    else:
        outputs = layer(x)
        (outputs * keras.ops.convert_to_tensor(upstream)).sum().backward()
        grads = [v.value.grad for v in layer.trainable_weights]
    return {name: keras.ops.convert_to_numpy(g) for name, g in zip(names, grads, strict=True)}


def test_gradients_treat_the_norm_as_a_constant():
    """Section 4.3: ||V|| is detached, so A, B and m see `m / ||V||` as a constant scale."""
    layer = trained(lk.DoraEinsumDense(built_query(), rank=4, alpha=8.0))
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 5, 64)).astype("float32")
    upstream = rng.normal(size=(2, 5, 4, 16)).astype("float32")
    grads = gradients(layer, x, upstream)
    kernel = layer.original_layer.kernel.numpy()
    a, b, m = (layer.lora_kernel_a.numpy(), layer.lora_kernel_b.numpy(), layer.magnitude.numpy())
    norm = np.sqrt(np.sum((kernel + layer.scaling * np.einsum("cr,rde->cde", a, b)) ** 2, axis=0))
    low_rank = np.einsum("abc,cr->abr", x, a)
    unscaled = np.einsum("abc,cde->abde", x, kernel) + layer.scaling * np.einsum(
        "abr,rde->abde", low_rank, b
    )
    scaled_upstream = upstream * m / norm
    expected = {
        "magnitude": np.einsum("abde,abde->de", upstream, unscaled) / norm,
        "lora_kernel_b": layer.scaling * np.einsum("abr,abde->rde", low_rank, scaled_upstream),
        "lora_kernel_a": layer.scaling * np.einsum("abc,abde,rde->cr", x, scaled_upstream, b),
    }
    assert sorted(grads) == sorted(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(grads[name], value, rtol=1e-4, atol=1e-4, err_msg=name)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(policy):
    layer = trained(lk.DoraEinsumDense(built_query(dtype=policy), rank=4))
    assert layer.magnitude.dtype == "float32"
    y = layer(np.ones((2, 5, 64), "float32"))
    assert keras.backend.standardize_dtype(y.dtype) == layer.original_layer.compute_dtype
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(keras.ops.cast(y, "float32"))))


def test_kernel_with_output_axes_first_is_refused():
    original = keras.layers.EinsumDense("abc,dc->abd", output_shape=(None, 8))
    original.build((None, None, 16))
    with pytest.raises(
        ValueError,
        match="DoRA needs the kernel's output axes after its input axes, in the order the "
        "outputs have them; layer '.*' computes 'abc,dc->abd'. Use variant='lora'",
    ):
        lk.DoraEinsumDense(original, rank=2)
    assert original.trainable  # refused before it was frozen
    assert lk.LoraEinsumDense(original, rank=2).equations.output_axes_last is False


def test_column_norm_and_scale_are_shared_pure_functions():
    from lora_keras.layers import dora_math

    kernel = np.random.default_rng(5).normal(size=(4, 3, 5)).astype("float32")
    norm = keras.ops.convert_to_numpy(dora_math.column_norm(kernel, 2))
    np.testing.assert_allclose(norm, np.linalg.norm(kernel.reshape(12, 5), axis=0), rtol=1e-6)
    # An all-zero column gets a finite scale (so its zero output stays zero), not a NaN.
    scale = dora_math.magnitude_scale(np.zeros(5, "float32"), np.zeros(5, "float32"))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(scale), np.zeros(5))


@pytest.mark.parametrize("merged_first", [False, True])
def test_a_zero_magnitude_is_refused_before_anything_changes(merged_first):
    layer = trained(lk.DoraEinsumDense(built_query(), rank=2))
    if merged_first:
        layer.merge()
    magnitude = layer.magnitude.numpy()
    magnitude[0, 0] = 0.0
    layer.magnitude.assign(magnitude)
    kernel = layer.original_layer.kernel.numpy()
    action = "unmerge" if merged_first else "merge"
    with pytest.raises(
        ValueError, match=f"Cannot {action} layer '.*_dora': 1 of its DoRA magnitudes are 0"
    ):
        getattr(layer, action)()
    np.testing.assert_array_equal(layer.original_layer.kernel.numpy(), kernel)
    assert layer.merged == merged_first
    assert np.isfinite(layer.original_layer.kernel.numpy()).all()


def test_dropout_follows_peft_dora():
    """PEFT's DoRA with dropout: x W + b + (m/||V|| - 1) drop(x) W + (m/||V||) s drop(x) A B."""
    layer = trained(lk.DoraEinsumDense(built_query(), rank=2, dropout=0.5))
    x = np.random.default_rng(0).normal(size=(2, 3, 64)).astype("float32")
    # A fixed mask in place of the random one, so the formula can be written out on any backend.
    mask = (np.random.default_rng(1).uniform(size=x.shape) > 0.5).astype("float32") * 2.0
    layer._dropped = lambda inputs, training: inputs * mask if training else inputs
    got = run(layer, x, training=True)
    dropped = x * mask
    original = layer.original_layer
    w, bias = original.kernel.numpy(), original.bias.numpy()
    a, b = layer.lora_kernel_a.numpy(), layer.lora_kernel_b.numpy()
    v = w + layer.scaling * np.einsum("cr,rde->cde", a, b)
    scale = layer.magnitude.numpy() / np.sqrt(np.sum(v**2, axis=0))
    expected = (
        np.einsum("abc,cde->abde", x, w)
        + bias
        + (scale - 1) * np.einsum("abc,cde->abde", dropped, w)
        + scale * layer.scaling * np.einsum("abc,cr,rde->abde", dropped, a, b)
    )
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    # Without training (no dropout) it is the paper's formula, as without dropout.
    np.testing.assert_allclose(
        run(layer, x), dora_formula(layer, x, "abc,cde->abde", "cr,rde->cde", 0), atol=1e-5
    )
