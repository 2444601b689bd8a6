"""MixLoRA's model side (and MixDoRA's, its variant), in one folder:

- `settings.py`: its settings and defaults, without Keras (`compare` checks them before any run);
- `apply.py`: `apply_mixlora`, `expert_loads`, and the section it records in an adapted backbone's
  config;
- `adapter_file.py`: the mixture's part of an adapter file (`lk.save_adapter`, `lk.load_adapter`).

The block itself is a layer, `lora_keras.layers.MixLoraFeedForward`; the report's expert-load
plot, drawn from results.json and not from a model, is `lora_keras/report/expert_loads.py`.
Names are imported on first use, so that `settings` stays free of Keras.
"""

from lora_keras.lazy import lazy_attributes

__getattr__, __dir__ = lazy_attributes(
    globals(),
    {
        "MIXLORA_DEFAULTS": "lora_keras.mixlora.settings",
        "MIXLORA_VARIANTS": "lora_keras.mixlora.settings",
        "apply_mixlora": "lora_keras.mixlora.apply",
        "expert_loads": "lora_keras.mixlora.apply",
        "mixlora_record": "lora_keras.mixlora.apply",
        "mixlora_settings": "lora_keras.mixlora.apply",
    },
)
