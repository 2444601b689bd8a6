"""Data-parallel training on the engines Keras ships, never a home-made one.

JAX: `keras.distribution.DataParallel` over every visible device. TensorFlow:
`tf.distribute.MirroredStrategy` over every GPU (or, with none, every logical CPU device).
Either way each device holds a replica of every weight (the frozen base and the LoRA
weights alike) and takes an equal slice of each global batch; the gradients are summed
across replicas, so a step sees the same global batch as one device would.
"""

import keras


def data_parallel_devices():
    """The devices `data_parallel()` trains on, for the running backend."""
    backend = keras.backend.backend()
    if backend == "jax":
        return keras.distribution.list_devices()
    if backend == "tensorflow":
        import tensorflow as tf

        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return [device.name for device in devices]
    raise ValueError(
        f"Data-parallel training is not available on the {backend} backend: Keras's "
        "distribution API covers JAX (keras.distribution.DataParallel) and TensorFlow "
        "(tf.distribute). Use KERAS_BACKEND=jax (lora-keras compare --backend jax)."
    )


def data_parallel(devices=None):
    """A scope in which models are built, compiled and trained data-parallel.

    Build, compile and `fit` inside it; the batch size given to the data is the global batch,
    split evenly across the devices (so it must be a multiple of their number).

    Args:
        devices: device names (as from `data_parallel_devices()`); `None` means all of them.

    Example:
    ```python
    with lk.data_parallel():
        lm = lk.load_gpt2("gpt2_tiny", weights="random")
        lk.apply_lora(lm)
        lm.compile(optimizer=lk.tutorial_optimizer(), loss=loss)
        lm.fit(train_ds)
    ```
    """
    devices = devices or data_parallel_devices()
    if keras.backend.backend() == "jax":
        return keras.distribution.DataParallel(devices=devices).scope()
    import tensorflow as tf

    return tf.distribute.MirroredStrategy(devices).scope()
