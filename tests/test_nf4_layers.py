import keras
import numpy as np
import pytest
from conftest import randomize_lora_b
from keras import ops
from layer_test_case import count, run_layer_test

import lora_keras as lk
from lora_keras.layers import base_nf4_layer
from lora_keras.layers.base_nf4_layer import input_gradient_equation

# Portable: CI runs this file again under jax and torch.
pytestmark = pytest.mark.backends


def built_query(dtype=None):
    layer = keras.layers.EinsumDense(
        "abc,cde->abde", output_shape=(None, 4, 16), bias_axes="de", dtype=dtype
    )
    layer.build((None, None, 64))
    return layer


def built_attention_output():
    layer = keras.layers.EinsumDense("abcd,cde->abe", output_shape=(None, 64), bias_axes="e")
    layer.build((None, None, 4, 16))
    return layer


def built_dense():
    layer = keras.layers.Dense(128, activation="gelu")
    layer.build((None, None, 64))
    return layer


def inputs(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def numpy_of(x):
    return ops.convert_to_numpy(x)


def input_gradient(function, x):
    """d sum(function(x)^2) / dx on the running backend."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(function(x) ** 2)
        return tape.gradient(loss, x).numpy()
    if backend == "jax":
        import jax

        return np.asarray(jax.grad(lambda v: ops.sum(function(v) ** 2))(x))
    import torch

    x = torch.tensor(x, requires_grad=True)
    ops.sum(function(x) ** 2).backward()
    return x.grad.numpy()


# (make the float layer, its input shape, its NF4 class)
CASES = [
    (built_query, (2, 5, 64), lk.NF4EinsumDense),
    (built_attention_output, (2, 5, 4, 16), lk.NF4EinsumDense),
    (built_dense, (2, 5, 64), lk.NF4Dense),
]


@pytest.mark.parametrize("make, shape, nf4_class", CASES)
def test_nf4_layer_is_the_float_layer_with_the_dequantized_kernel(make, shape, nf4_class):
    keras.utils.set_random_seed(0)
    original = make()
    layer = nf4_class.from_float(original)
    x = inputs(shape)
    float_again = layer.to_float()
    assert type(float_again) is type(original) and float_again.name == original.name
    expected = lk.nf4_dequantize(lk.nf4_quantize(numpy_of(original.kernel)))
    np.testing.assert_array_equal(numpy_of(float_again.kernel), expected)
    np.testing.assert_array_equal(numpy_of(float_again.bias), numpy_of(original.bias))
    np.testing.assert_allclose(numpy_of(layer(x)), numpy_of(float_again(x)), atol=1e-5)
    assert tuple(layer(x).shape) == layer.compute_output_shape(shape)
    # Close to the original float layer, not equal: NF4 rounds the kernel (more for these
    # Glorot-uniform kernels than for normal ones, which its code book is made for).
    error = np.abs(numpy_of(layer(x)) - numpy_of(original(x))).mean()
    assert 0 < error < 0.15 * np.abs(numpy_of(original(x))).mean()


def test_nf4_layer_stores_integer_codes_and_frozen_float_constants():
    layer = lk.NF4EinsumDense.from_float(built_query())
    stored = {
        v.name: (tuple(v.shape), keras.backend.standardize_dtype(v.dtype)) for v in layer.weights
    }
    assert stored == {
        "codes": ((64 * 64 // 2,), "uint8"),
        "absmax_codes": ((64,), "int8"),
        "absmax_scales": ((1,), "float32"),
        "absmax_mean": ((), "float32"),
        "bias": ((4, 16), "float32"),
    }
    assert layer.trainable_weights == [] and not layer.trainable
    plain = lk.NF4Dense.from_float(built_dense(), block_size=32, double_quant=False)
    assert {v.name: tuple(v.shape) for v in plain.weights} == {
        "codes": (64 * 128 // 2,),
        "absmax": (64 * 128 // 32,),
        "bias": (128,),
    }


@pytest.mark.parametrize("make, shape, nf4_class", CASES)
def test_backward_pass_recomputes_the_kernel(make, shape, nf4_class, monkeypatch):
    layer = nf4_class.from_float(make())
    kernel = numpy_of(layer.kernel)
    calls = []
    dequantize = base_nf4_layer.dequantize_arrays

    def counting(*args, after, **kwargs):
        calls.append(tuple(after.shape))
        return dequantize(*args, after=after, **kwargs)

    monkeypatch.setattr(base_nf4_layer, "dequantize_arrays", counting)
    x = inputs(shape)
    gradient = input_gradient(layer.project, x)
    equation = layer.equation
    outputs = np.einsum(equation, x, kernel)
    # Once for the forward pass, once again for the backward: nothing kept between them.
    # Each waits for its matmul's other operand: the input, then the upstream gradient.
    assert calls == [shape, outputs.shape]
    expected = np.einsum(input_gradient_equation(equation), 2 * outputs, kernel)
    np.testing.assert_allclose(gradient, expected, rtol=1e-4, atol=1e-4)


def depends_on(tensor, source):
    """Whether `source` is among the ops `tensor` is computed from, in a TensorFlow graph."""
    seen, stack = set(), [tensor.op]
    while stack:
        op = stack.pop()
        if op is source.op:
            return True
        if op.name not in seen:
            seen.add(op.name)
            stack.extend(t.op for t in op.inputs)
    return False


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="a TensorFlow graph")
def test_dequantization_waits_for_the_input_in_a_graph():
    # In a graph every op may run as soon as its inputs exist: a dequantization fed by
    # variables alone would run at the start of the step, every layer's at once.
    import tensorflow as tf

    layer = lk.NF4EinsumDense.from_float(built_query())

    @tf.function
    def input_gradient_graph(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer.project(x) ** 2)
        return tape.gradient(loss, x)

    graph = input_gradient_graph.get_concrete_function(tf.TensorSpec((2, 5, 64))).graph
    (x,) = graph.inputs[:1]
    # The code lookups: a gather from the (256, 2) table of a byte's two code values.
    operations = graph.get_operations()
    lookups = [op for op in operations if op.type == "GatherV2" and op.inputs[0].shape == (256, 2)]
    assert len(lookups) == 2  # forward and backward
    assert all(depends_on(op.outputs[0], x) for op in lookups)


@pytest.mark.parametrize(
    "make, shape, wrapper_class, expected_trainable",
    [
        (built_query, (2, 5, 64), lk.LoraEinsumDense, 64 * 4 + 4 * 4 * 16),
        (built_attention_output, (2, 5, 4, 16), lk.LoraEinsumDense, 4 * 16 * 4 + 4 * 64),
        (built_dense, (2, 5, 64), lk.LoraDense, 64 * 4 + 4 * 128),
    ],
)
def test_lora_on_an_nf4_layer_contract(make, shape, wrapper_class, expected_trainable, tmp_path):
    def make_layer():
        original = make()
        nf4_class = lk.NF4Dense if wrapper_class is lk.LoraDense else lk.NF4EinsumDense
        layer = wrapper_class(nf4_class.from_float(original), rank=4)
        randomize_lora_b([layer])
        return layer

    layer = make_layer()
    stored = count(layer.original_layer.non_trainable_weights)
    run_layer_test(
        make_layer,
        input_shape=shape,
        expected_output_shape=tuple(layer.compute_output_shape(shape)),
        expected_trainable=expected_trainable,
        expected_non_trainable=stored,
        tmp_path=tmp_path,
    )


def test_lora_on_nf4_is_a_no_op_at_initialization_and_adds_the_update():
    nf4 = lk.NF4EinsumDense.from_float(built_query())
    x = inputs((2, 5, 64))
    before = numpy_of(nf4(x))
    layer = lk.LoraEinsumDense(nf4, rank=4)
    np.testing.assert_array_equal(numpy_of(layer(x)), before)
    randomize_lora_b([layer])
    update = np.einsum("abc,cde->abde", x, numpy_of(layer.delta_kernel()))
    np.testing.assert_allclose(numpy_of(layer(x)), before + update, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_nf4_dequantizes_to_the_compute_dtype(policy):
    layer = lk.NF4EinsumDense.from_float(built_query(dtype=policy))
    assert keras.backend.standardize_dtype(layer.kernel.dtype) == layer.compute_dtype
    y = layer(np.ones((2, 5, 64), "float32"))
    assert keras.backend.standardize_dtype(y.dtype) == layer.compute_dtype
    assert keras.backend.standardize_dtype(layer.absmax_scales.dtype) == "float32"


def test_config_round_trip():
    layer = lk.NF4Dense.from_float(built_dense(), block_size=32)
    config = layer.get_config()
    assert config["kernel_shape"] == (64, 128) and config["block_size"] == 32
    clone = lk.NF4Dense.from_config(config)
    assert clone.get_config() == config


def test_input_gradient_equations():
    assert input_gradient_equation("abc,cde->abde") == "abde,cde->abc"
    assert input_gradient_equation("abcd,cde->abe") == "abe,cde->abcd"
    assert input_gradient_equation("...i,io->...o") == "...o,io->...i"
    with pytest.raises(ValueError, match="sums input axes \\['b'\\] away without a kernel"):
        input_gradient_equation("abc,cd->ad")
