"""The keras.io LoRA tutorial's optimizer, shared by every measured run and the notebooks."""


def tutorial_optimizer(learning_rate=5e-5, global_clipnorm=1.0):
    """AdamW as the tutorial sets it up: the same for full fine-tuning and every LoRA mode.

    Weight decay 0.01 applies to kernels only (not to biases and layer-norm scales and
    offsets), gradients are clipped to a global norm of 1, epsilon is 1e-6. With
    `global_clipnorm=None` gradients are not clipped: a sweep trained `together` does so on
    both sides, since one norm over several adapters' gradients would clip each otherwise
    than its separate run.

    Example:
    ```python
    lm.compile(optimizer=lk.tutorial_optimizer(5e-5), loss=...)
    ```
    """
    import keras  # here, so that `lora_keras.experiments` imports without Keras

    optimizer = keras.optimizers.AdamW(
        learning_rate=learning_rate,
        weight_decay=0.01,
        epsilon=1e-6,
        global_clipnorm=global_clipnorm,
    )
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return optimizer
