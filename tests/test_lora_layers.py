import keras
import numpy as np
import pytest
from conftest import randomize_lora_b
from keras.ops import convert_to_numpy as to_numpy
from layer_test_case import run_layer_test

import lora_keras as lk

# Portable: CI runs these under JAX and torch too (`-m backends`).
pytestmark = pytest.mark.backends


def built_query(hidden=64, heads=4, head_dim=16, dtype=None):
    layer = keras.layers.EinsumDense(
        "abc,cde->abde", output_shape=(None, heads, head_dim), bias_axes="de", dtype=dtype
    )
    layer.build((None, None, hidden))
    return layer


def built_attention_output(hidden=64, heads=4, head_dim=16):
    layer = keras.layers.EinsumDense("abcd,cde->abe", output_shape=(None, hidden), bias_axes="e")
    layer.build((None, None, heads, head_dim))
    return layer


def built_dense(units=128, hidden=64, activation="gelu"):
    layer = keras.layers.Dense(units, activation=activation)
    layer.build((None, None, hidden))
    return layer


def with_random_b(layer):
    randomize_lora_b([layer])
    return layer


def test_einsum_dense_layer_contract(tmp_path):
    run_layer_test(
        lambda: with_random_b(lk.LoraEinsumDense(built_query(), rank=4)),
        input_shape=(2, 5, 64),
        expected_output_shape=(2, 5, 4, 16),
        expected_trainable=64 * 4 + 4 * 4 * 16,
        expected_non_trainable=64 * 64 + 64,
        tmp_path=tmp_path,
    )


def test_attention_output_layer_contract(tmp_path):
    run_layer_test(
        lambda: with_random_b(lk.LoraEinsumDense(built_attention_output(), rank=2)),
        input_shape=(2, 5, 4, 16),
        expected_output_shape=(2, 5, 64),
        expected_trainable=4 * 16 * 2 + 2 * 64,
        expected_non_trainable=64 * 64 + 64,
        tmp_path=tmp_path,
    )


def test_dense_layer_contract(tmp_path):
    run_layer_test(
        lambda: with_random_b(lk.LoraDense(built_dense(), rank=3, dropout=0.1)),
        input_shape=(2, 5, 64),
        expected_output_shape=(2, 5, 128),
        expected_trainable=64 * 3 + 3 * 128,
        expected_non_trainable=64 * 128 + 128,
        tmp_path=tmp_path,
    )


def test_factor_shapes():
    query = lk.LoraEinsumDense(built_query(), rank=4)
    assert tuple(query.lora_kernel_a.shape) == (64, 4)
    assert tuple(query.lora_kernel_b.shape) == (4, 4, 16)
    output = lk.LoraEinsumDense(built_attention_output(), rank=4)
    assert tuple(output.lora_kernel_a.shape) == (4, 16, 4)
    assert tuple(output.lora_kernel_b.shape) == (4, 64)


def test_formula_matches_hand_written_einsum():
    original = built_query()
    layer = with_random_b(lk.LoraEinsumDense(original, rank=4, alpha=8.0))
    x = np.random.default_rng(1).normal(size=(2, 5, 64)).astype("float32")
    kernel, bias = to_numpy(original.kernel), to_numpy(original.bias)
    a, b = to_numpy(layer.lora_kernel_a), to_numpy(layer.lora_kernel_b)
    expected = (
        np.einsum("abc,cde->abde", x, kernel)
        + bias
        + (8.0 / 4) * np.einsum("abr,rde->abde", np.einsum("abc,cr->abr", x, a), b)
    )
    np.testing.assert_allclose(to_numpy(layer(x)), expected, rtol=1e-5, atol=1e-5)


def test_dense_formula_applies_activation_after_update():
    original = built_dense(units=32, activation="relu")
    layer = with_random_b(lk.LoraDense(original, rank=2, alpha=2.0))
    x = np.random.default_rng(2).normal(size=(3, 64)).astype("float32")
    a, b = to_numpy(layer.lora_kernel_a), to_numpy(layer.lora_kernel_b)
    pre = x @ to_numpy(original.kernel) + to_numpy(original.bias) + (2.0 / 2) * (x @ a @ b)
    np.testing.assert_allclose(to_numpy(layer(x)), np.maximum(pre, 0.0), rtol=1e-5, atol=1e-5)


def test_no_op_at_initialization():
    original = built_query()
    layer = lk.LoraEinsumDense(original, rank=4)
    assert np.all(to_numpy(layer.lora_kernel_b) == 0.0)
    assert np.any(to_numpy(layer.lora_kernel_a) != 0.0)
    x = np.random.default_rng(3).normal(size=(2, 5, 64)).astype("float32")
    np.testing.assert_array_equal(to_numpy(layer(x)), to_numpy(original(x)))


@pytest.mark.parametrize("rslora, expected", [(False, 32.0 / 16), (True, 32.0 / 4)])
def test_scaling(rslora, expected):
    layer = lk.LoraEinsumDense(built_query(), rank=16, alpha=32.0, rslora=rslora)
    assert layer.scaling == expected


def test_original_layer_is_frozen_bias_included():
    original = built_query()
    layer = lk.LoraEinsumDense(original, rank=4)
    assert not original.trainable
    trainable_paths = sorted(v.path.split("/")[-1] for v in layer.trainable_weights)
    assert trainable_paths == ["lora_kernel_a", "lora_kernel_b"]


def test_dropout_only_on_lora_branch():
    assert lk.LoraDense(built_dense(), rank=2).dropout_layer is None
    layer = with_random_b(lk.LoraDense(built_dense(activation=None), rank=2, dropout=0.5))
    x = np.ones((4, 64), "float32")
    base = to_numpy(layer.original_layer(x))
    inference = to_numpy(layer(x, training=False))
    training = to_numpy(layer(x, training=True))
    assert not np.allclose(training, inference)
    # The frozen path never sees dropout: with B zero again, training equals the base.
    layer.lora_kernel_b.assign(np.zeros(layer.lora_kernel_b.shape, "float32"))
    np.testing.assert_allclose(to_numpy(layer(x, training=True)), base, rtol=1e-6)


def test_merge_and_unmerge_are_exact_and_change_nothing():
    original = built_query()
    layer = with_random_b(lk.LoraEinsumDense(original, rank=4))
    x = np.random.default_rng(4).normal(size=(2, 5, 64)).astype("float32")
    kernel_before = to_numpy(original.kernel).copy()
    unmerged = to_numpy(layer(x))
    layer.merge()
    assert layer.merged
    assert not np.allclose(to_numpy(original.kernel), kernel_before)
    np.testing.assert_allclose(to_numpy(layer(x)), unmerged, rtol=1e-5, atol=1e-5)
    layer.unmerge()
    np.testing.assert_allclose(to_numpy(original.kernel), kernel_before, rtol=0, atol=1e-6)
    np.testing.assert_allclose(to_numpy(layer(x)), unmerged, rtol=1e-5, atol=1e-5)


def test_merge_twice_and_unmerge_unmerged_are_refused():
    layer = lk.LoraEinsumDense(built_query(), rank=4)
    with pytest.raises(ValueError, match="is not merged: there is nothing to unmerge"):
        layer.unmerge()
    layer.merge()
    with pytest.raises(ValueError, match="already merged: call `unmerge\\(\\)` before merging"):
        layer.merge()


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(policy):
    original = built_query(dtype=policy)
    layer = with_random_b(lk.LoraEinsumDense(original, rank=4))
    assert layer.lora_kernel_a.dtype == "float32"
    assert layer.compute_dtype == original.compute_dtype
    y = layer(np.ones((2, 5, 64), "float32"))
    assert keras.backend.standardize_dtype(y.dtype) == original.compute_dtype
    assert np.all(np.isfinite(to_numpy(keras.ops.cast(y, "float32"))))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"rank": 0}, "LoRA rank must be an integer of at least 1, got rank=0"),
        ({"rank": 2.5}, "LoRA rank must be an integer of at least 1, got rank=2.5"),
        ({"rank": 65}, "LoRA rank 65 is larger than the smallest dimension \\(64\\)"),
        ({"rank": 4, "dropout": 1.0}, "LoRA dropout must be in \\[0, 1\\), got dropout=1.0"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        lk.LoraEinsumDense(built_query(), **kwargs)


def test_lora_twice_on_one_layer_is_refused():
    layer = lk.LoraEinsumDense(built_query(), rank=4)
    with pytest.raises(ValueError, match="already has LoRA. Apply LoRA once per layer"):
        lk.LoraEinsumDense(layer, rank=4)


def test_keras_builtin_lora_layer_is_refused():
    original = built_query()
    original.enable_lora(4)
    with pytest.raises(ValueError, match="has Keras's built-in LoRA enabled"):
        lk.LoraEinsumDense(original, rank=4)


def test_kernel_constraint_is_refused():
    original = keras.layers.Dense(8, kernel_constraint="non_neg")
    original.build((None, 16))
    with pytest.raises(ValueError, match="has a kernel constraint, which LoRA cannot respect"):
        lk.LoraDense(original, rank=2)


def test_per_axis_projection_is_refused():
    original = keras.layers.EinsumDense("abc,bc->abc", output_shape=(4, 8))
    original.build((None, 4, 8))
    with pytest.raises(ValueError, match="keeps kernel axes \\['b', 'c'\\] in both input"):
        lk.LoraEinsumDense(original, rank=2)


def test_equation_and_kernel_must_agree():
    from lora_keras.layers.lora_equations import lora_equations

    with pytest.raises(
        ValueError, match="names 3 kernel axes but the kernel has shape \\(64, 4\\)"
    ):
        lora_equations("abc,cde->abde", (64, 4))


@pytest.mark.parametrize("alpha", [float("nan"), float("inf"), -2.0, 0.0, "8", True])
def test_alpha_that_is_not_a_finite_positive_number_is_refused(alpha):
    original = built_query()
    with pytest.raises(ValueError, match="LoRA alpha must be a finite number above 0"):
        lk.LoraEinsumDense(original, rank=2, alpha=alpha)
    assert original.trainable  # refused before anything was frozen


@pytest.mark.parametrize(("a_init", "bound"), [("lora", 1.0), ("he_uniform", 6.0**0.5)])
def test_a_starts_within_the_reference_bound(a_init, bound):
    # The reference LoRA and PEFT draw A with kaiming_uniform(a=sqrt(5)): within 1/sqrt(fan_in);
    # Keras's HeUniform (enable_lora's) draws within sqrt(6/fan_in).
    keras.utils.set_random_seed(0)
    layer = lk.LoraDense(built_dense(units=512, hidden=256), rank=64, a_init=a_init)
    a = np.abs(to_numpy(layer.lora_kernel_a)) * 256**0.5  # in units of 1/sqrt(fan_in)
    assert a.max() <= bound and a.max() > 0.99 * bound
    assert layer.get_config()["a_init"] == a_init


def test_unknown_a_init_is_refused():
    with pytest.raises(ValueError, match="Unknown a_init 'glorot': use one of lora, he_uniform"):
        lk.LoraDense(built_dense(), rank=2, a_init="glorot")
