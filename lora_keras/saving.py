"""Loading a `.keras` file of any adapted GPT-2, whatever was imported before.

A `.keras` file names `lora_keras>AdaptedGPT2Backbone`, and its config holds a section per method
applied (`"nf4"`, `"lora"`, `"mixlora"`, `"multi_lora"`); each section is put back by its
method's module.
Importing this module imports them all, so Keras finds the class and every section loads.
`import lora_keras` does the same when Keras is already loaded.
"""

import keras

import lora_keras.lora  # noqa: F401  (registers the "lora" section)
import lora_keras.mixlora.apply  # noqa: F401  (registers the "mixlora" section)
import lora_keras.multi_lora.apply  # noqa: F401  (registers the "multi_lora" section)
import lora_keras.qlora  # noqa: F401  (registers the "nf4" section)


def load_model(path, **kwargs):
    """`keras.saving.load_model`, with every lora_keras method ready to be put back.

    Args:
        path: a `.keras` file, saved with LoRA, DoRA, QLoRA, MixLoRA, several adapters
            (`lk.apply_multi_lora`) or none of them.
        **kwargs: passed to `keras.saving.load_model` (`compile`, `safe_mode`, ...).

    Example:
    ```python
    lm.save("tuned.keras")
    restored = lk.load_model("tuned.keras")
    ```
    """
    return keras.saving.load_model(path, **kwargs)
