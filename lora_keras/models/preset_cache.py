"""A KerasHub preset that kagglehub already downloaded, found in its cache with no network.

KerasHub names each preset by a versioned Kaggle handle, and kagglehub keeps what it
downloaded under `$KAGGLEHUB_CACHE` (default `~/.cache/kagglehub`) at a path that handle
decides. A folder there holding the preset's `config.json` is a complete local preset:
`from_preset(folder)` loads it as it would any folder, without asking the network.
"""

import os

import keras_hub
from kagglehub.cache import get_cached_path
from kagglehub.handle import parse_model_handle


def cached_preset_folder(preset):
    """The kagglehub cache folder holding `preset`, or `None` if it was never downloaded.

    Example:
    ```python
    cached_preset_folder("gpt2_base_en")  # '~/.cache/kagglehub/models/keras/gpt2/...' or None
    ```
    """
    metadata = keras_hub.models.GPT2CausalLM.presets.get(preset)
    if metadata is None:
        return None
    handle = parse_model_handle(metadata["kaggle_handle"].removeprefix("kaggle://"))
    folder = get_cached_path(handle)
    return folder if os.path.isfile(os.path.join(folder, "config.json")) else None
