"""A shared layer check in the spirit of KerasHub's `run_layer_test`."""

import math

import keras
import numpy as np
from keras.ops import convert_to_numpy as to_numpy


def count(variables):
    return sum(math.prod(v.shape) for v in variables)


def run_layer_test(
    make_layer,
    input_shape,
    expected_output_shape,
    expected_trainable,
    expected_non_trainable,
    tmp_path,
    extra_inputs=None,
):
    """Checks weight counts, shapes, config and `.keras` round trips, and one fit step.

    Args:
        make_layer: a callable returning a fresh, built layer.
        input_shape: the input's full shape, batch included.
        expected_output_shape: the output's full shape.
        expected_trainable: number of trainable scalars.
        expected_non_trainable: number of frozen scalars.
        tmp_path: pytest's temporary folder.
        extra_inputs: `{keyword: array}` the layer's call takes besides its input
            (e.g. `adapter_ids`), each fed as one more model input.
    """
    layer = make_layer()
    extra_inputs = extra_inputs or {}
    x = np.random.default_rng(0).normal(size=input_shape).astype("float32")
    y = layer(x, **extra_inputs)
    assert tuple(y.shape) == tuple(expected_output_shape)
    assert count(layer.trainable_weights) == expected_trainable
    assert count(layer.non_trainable_weights) == expected_non_trainable

    # The config round trip gives the same config.
    clone = layer.__class__.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()

    # A model holding the layer saves and loads as `.keras` with equal outputs.
    inputs = keras.Input(shape=input_shape[1:])
    extra = {k: keras.Input(shape=v.shape[1:], dtype=v.dtype) for k, v in extra_inputs.items()}
    model = keras.Model([inputs, *extra.values()] if extra else inputs, layer(inputs, **extra))
    x = [x, *extra_inputs.values()] if extra_inputs else x
    path = tmp_path / f"{layer.name}.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_allclose(to_numpy(restored(x)), to_numpy(model(x)), rtol=1e-6, atol=1e-6)

    # One fit step moves every trainable weight and no frozen one.
    before = [to_numpy(v).copy() for v in model.weights]
    trainable_ids = {id(v) for v in model.trainable_weights}
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    model.fit(
        x, np.ones(expected_output_shape, "float32"), epochs=1, batch_size=input_shape[0], verbose=0
    )
    for variable, old in zip(model.weights, before, strict=True):
        changed = not np.array_equal(to_numpy(variable), old)
        assert changed == (id(variable) in trainable_ids), variable.path
