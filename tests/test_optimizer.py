import keras
import numpy as np

import lora_keras as lk


def test_tutorial_optimizer_decays_kernels_only():
    layer = keras.layers.Dense(3, bias_initializer="ones")
    layer.build((None, 2))
    optimizer = lk.tutorial_optimizer(learning_rate=0.5)
    assert isinstance(optimizer, keras.optimizers.AdamW)
    assert optimizer.weight_decay == 0.01 and optimizer.global_clipnorm == 1.0
    kernel, bias = layer.kernel.numpy().copy(), layer.bias.numpy().copy()
    zeros = [keras.ops.zeros_like(v) for v in layer.trainable_variables]
    optimizer.apply_gradients(zip(zeros, layer.trainable_variables, strict=True))
    # With zero gradients only weight decay moves a weight: kernel * (1 - lr * decay).
    np.testing.assert_allclose(layer.kernel.numpy(), kernel * (1 - 0.5 * 0.01), rtol=1e-6)
    np.testing.assert_array_equal(layer.bias.numpy(), bias)
