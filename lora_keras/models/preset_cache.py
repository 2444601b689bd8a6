"""A KerasHub preset that kagglehub already downloaded, found in its cache with no network.

KerasHub names each preset by a versioned Kaggle handle, and kagglehub keeps what it
downloaded under `$KAGGLEHUB_CACHE` (default `~/.cache/kagglehub`) at a path that handle
decides. A folder there holding the preset's `config.json` is a complete local preset:
`from_preset(folder)` loads it as it would any folder, without asking the network.

The handle is read from KerasHub's GPT-2 preset table, a module of plain dicts, loaded on
its own: importing `keras_hub` would start TensorFlow in a process that only checks its
arguments (`lora-keras compare --weights pretrained` answers in well under a second).
"""

import importlib.util
import os

from kagglehub.cache import get_cached_path
from kagglehub.handle import parse_model_handle

# Where KerasHub keeps GPT-2's preset table, inside its package.
_GPT2_PRESETS = ("src", "models", "gpt2", "gpt2_presets.py")


def gpt2_kaggle_handles():
    """`{preset: "kaggle://..."}` of KerasHub's GPT-2 presets, without importing `keras_hub`.

    Falls back to KerasHub's registry (which imports it) if the table has moved.
    """
    package = importlib.util.find_spec("keras_hub")
    path = os.path.join(package.submodule_search_locations[0], *_GPT2_PRESETS)
    if os.path.isfile(path):
        spec = importlib.util.spec_from_file_location("_keras_hub_gpt2_presets", path)
        table = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(table)
        presets = table.backbone_presets
    else:
        import keras_hub

        presets = keras_hub.models.GPT2CausalLM.presets
    return {name: metadata["kaggle_handle"] for name, metadata in presets.items()}


def cached_preset_folder(preset):
    """The kagglehub cache folder holding `preset`, or `None` if it was never downloaded.

    Example:
    ```python
    cached_preset_folder("gpt2_base_en")  # '~/.cache/kagglehub/models/keras/gpt2/...' or None
    ```
    """
    handle = gpt2_kaggle_handles().get(preset)
    if handle is None:
        return None
    folder = get_cached_path(parse_model_handle(handle.removeprefix("kaggle://")))
    return folder if os.path.isfile(os.path.join(folder, "config.json")) else None
