"""The first cell of a notebook that measures in child processes, after its install lines."""

import sys


def start_measuring_notebook():
    """Leaves the GPU to the measured runs and says what runs this notebook.

    Every measured run starts a process of its own and takes the GPU there; TensorFlow in the
    notebook's own process would otherwise reserve most of the GPU's memory at its first
    operation, so this process hides the GPU from itself (its own small work runs on the CPU).

    Returns:
        `(on_gpu, on_colab, device)`: whether this runtime has a GPU, whether it is Colab, and
        the device's name as `lk.describe_environment()` gives it.

    Example:
    ```python
    ON_GPU, ON_COLAB, DEVICE = lk.start_measuring_notebook()
    ```
    """
    import keras
    import tensorflow as tf

    import lora_keras
    from lora_keras.experiments.environment import describe_environment

    on_gpu = bool(tf.config.list_physical_devices("GPU"))
    on_colab = "google.colab" in sys.modules
    device = describe_environment()["device"]  # read before the GPU is hidden
    if on_gpu:
        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError:  # TensorFlow already ran here (a cell run twice)
            print(
                "TensorFlow already holds the GPU here: restart the runtime if runs run out of "
                "memory."
            )
    backend = keras.config.backend()
    print(f"lora_keras {lora_keras.__version__}, Keras {keras.__version__}, backend: {backend}")
    print(f"device: {device}" + (" on Colab" if on_colab else ""))
    return on_gpu, on_colab, device


def notebook_setting(name, value, default, why):
    """`value`, or `default` when it is None; prints which, and why.

    A notebook's parameters cell leaves a setting `None` to mean "choose for this runtime".

    Example:
    ```python
    BATCH_SIZE = lk.notebook_setting("BATCH_SIZE", None, 4, "CPU runtime")  # prints, returns 4
    ```
    """
    reason = why if value is None else "set in the parameters cell"
    value = default if value is None else value
    print(f"{name:<18} = {value!r:<16} ({reason})")
    return value
