import keras
import numpy as np
import pytest
from keras.ops import convert_to_numpy as to_numpy
from layer_test_case import run_layer_test
from test_lora_layers import built_attention_output, built_dense, built_query

import lora_keras as lk
from lora_keras.layers import MultiLoraDense, MultiLoraEinsumDense

# Portable: CI runs these under JAX and torch too (`-m backends`).
pytestmark = pytest.mark.backends

TWO = [{"name": "small", "rank": 2, "alpha": 8.0}, {"name": "big", "rank": 4, "alpha": 16.0}]
IDS = np.array([1, 0], "int32")


def with_random_factors(layer, seed=0):
    """Random A and B on each adapter's own rank, the padding left at zero."""
    rng = np.random.default_rng(seed)
    for k, adapter in enumerate(layer.adapters):
        r = adapter["rank"]
        a_shape = (*layer.lora_kernel_a.shape[1:-1], r)
        b_shape = (r, *layer.lora_kernel_b.shape[2:])
        weights = {
            "lora_kernel_a": rng.normal(0, 0.1, a_shape).astype("float32"),
            "lora_kernel_b": rng.normal(0, 0.1, b_shape).astype("float32"),
        }
        layer.set_adapter(k, weights, r, adapter["alpha"])
    return layer


def single_lora(original, adapter, weights):
    """A plain LoRA layer holding one adapter's weights."""
    single = lk.LoraEinsumDense if isinstance(original, keras.layers.EinsumDense) else lk.LoraDense
    layer = single(original, rank=adapter["rank"], alpha=adapter["alpha"])
    layer.lora_kernel_a.assign(weights["lora_kernel_a"])
    layer.lora_kernel_b.assign(weights["lora_kernel_b"])
    return layer


def test_einsum_dense_layer_contract(tmp_path):
    run_layer_test(
        lambda: with_random_factors(MultiLoraEinsumDense(built_query(), adapters=TWO)),
        input_shape=(2, 5, 64),
        expected_output_shape=(2, 5, 4, 16),
        expected_trainable=2 * 64 * 4 + 2 * 4 * 4 * 16,
        expected_non_trainable=64 * 64 + 64 + 2 * 4,
        tmp_path=tmp_path,
        extra_inputs={"adapter_ids": IDS},
    )


def test_attention_output_layer_contract(tmp_path):
    run_layer_test(
        lambda: with_random_factors(MultiLoraEinsumDense(built_attention_output(), adapters=TWO)),
        input_shape=(2, 5, 4, 16),
        expected_output_shape=(2, 5, 64),
        expected_trainable=2 * 4 * 16 * 4 + 2 * 4 * 64,
        expected_non_trainable=64 * 64 + 64 + 2 * 4,
        tmp_path=tmp_path,
        extra_inputs={"adapter_ids": IDS},
    )


def test_dense_layer_contract(tmp_path):
    run_layer_test(
        lambda: with_random_factors(MultiLoraDense(built_dense(), adapters=TWO, dropout=0.1)),
        input_shape=(2, 5, 64),
        expected_output_shape=(2, 5, 128),
        expected_trainable=2 * 64 * 4 + 2 * 4 * 128,
        expected_non_trainable=64 * 128 + 128 + 2 * 4,
        tmp_path=tmp_path,
        extra_inputs={"adapter_ids": IDS},
    )


@pytest.mark.parametrize("make", [built_query, built_attention_output, built_dense])
def test_each_example_equals_its_adapter_alone(make):
    original = make()
    multi = MultiLoraEinsumDense if isinstance(original, keras.layers.EinsumDense) else None
    multi = (multi or MultiLoraDense)(original, adapters=TWO)
    with_random_factors(multi)
    shape = (3, 5, 4, 16) if make is built_attention_output else (3, 5, 64)
    x = np.random.default_rng(1).normal(size=shape).astype("float32")
    ids = np.array([1, 0, 1], "int32")
    out = to_numpy(multi(x, adapter_ids=ids))
    for k, adapter in enumerate(TWO):
        alone = to_numpy(single_lora(original, adapter, multi.get_adapter(k))(x))
        np.testing.assert_allclose(out[ids == k], alone[ids == k], rtol=1e-5, atol=1e-6)
    assert not np.allclose(out[0], to_numpy(original(x))[0])  # the update is not a no-op


def test_padding_changes_no_output_and_never_trains():
    layer = MultiLoraEinsumDense(built_query(), adapters=TWO)
    x = np.random.default_rng(0).normal(size=(2, 5, 64)).astype("float32")
    a, b = to_numpy(layer.lora_kernel_a), to_numpy(layer.lora_kernel_b)
    assert not a[0, :, 2:].any() and not b[0, 2:].any()  # rank-2 adapter: padding zero
    assert a[0, :, :2].any() and a[1].all()  # its own columns initialised
    with_random_factors(layer)
    expected = to_numpy(layer(x, adapter_ids=IDS))
    # Junk in the padding changes nothing.
    junk_a, junk_b = to_numpy(layer.lora_kernel_a).copy(), to_numpy(layer.lora_kernel_b).copy()
    junk_a[0, :, 2:], junk_b[0, 2:] = 5.0, -7.0
    layer.lora_kernel_a.assign(junk_a)
    layer.lora_kernel_b.assign(junk_b)
    np.testing.assert_array_equal(to_numpy(layer(x, adapter_ids=IDS)), expected)
    with_random_factors(layer)  # padding back to zero

    # AdamW with weight decay for a few steps: the padding stays exactly zero.
    ids_in = keras.Input(shape=(), dtype="int32")
    x_in = keras.Input(shape=(5, 64))
    model = keras.Model([x_in, ids_in], layer(x_in, adapter_ids=ids_in))
    model.compile(optimizer=keras.optimizers.AdamW(0.01, weight_decay=0.1), loss="mse")
    y = np.ones((2, 5, 4, 16), "float32")
    model.fit([x, IDS], y, epochs=3, batch_size=2, verbose=0)
    a, b = to_numpy(layer.lora_kernel_a), to_numpy(layer.lora_kernel_b)
    assert not a[0, :, 2:].any() and not b[0, 2:].any()
    assert a[0, :, :2].any()


def test_adapter_without_examples_gets_zero_gradient():
    layer = with_random_factors(MultiLoraEinsumDense(built_query(), adapters=TWO))
    x = np.random.default_rng(0).normal(size=(2, 5, 64)).astype("float32")
    ids_in = keras.Input(shape=(), dtype="int32")
    x_in = keras.Input(shape=(5, 64))
    model = keras.Model([x_in, ids_in], layer(x_in, adapter_ids=ids_in))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    before = [to_numpy(v).copy() for v in (layer.lora_kernel_a, layer.lora_kernel_b)]
    model.fit([x, np.array([1, 1], "int32")], np.ones((2, 5, 4, 16)), batch_size=2, verbose=0)
    after = [to_numpy(v) for v in (layer.lora_kernel_a, layer.lora_kernel_b)]
    for old, new in zip(before, after, strict=True):
        np.testing.assert_array_equal(new[0], old[0])  # adapter 0 had no example
        assert not np.array_equal(new[1], old[1])


def test_missing_ids_and_bad_adapters_are_refused():
    layer = MultiLoraEinsumDense(built_query(), adapters=TWO)
    with pytest.raises(ValueError, match="needs to know which one each example"):
        layer(np.ones((2, 5, 64), "float32"))
    for adapters, message in [
        ([], "at least one adapter"),
        ([{"name": "a", "rank": 0}], "rank must be an integer"),
        ([{"name": "a", "alpha": -1.0}], "alpha must be a finite number"),
        ([{"name": "a"}, {"name": "a"}], "must not repeat"),
        ([{"name": "a", "rank": 65}], "larger than the smallest dimension"),
    ]:
        original = built_query()
        with pytest.raises(ValueError, match=message):
            MultiLoraEinsumDense(original, adapters=adapters)
        assert original.trainable  # a refused wrapper changes nothing
