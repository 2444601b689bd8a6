"""The one adapted backbone: a config section per method applied, and its class set here alone."""

import collections

import keras
import keras_hub

# The sections an adapted backbone's config may carry, in the order `from_config` restores
# them: NF4 kernels first (LoRA wraps them), then LoRA, then MixLoRA (independent of LoRA), then
# many adapters (which wrap NF4 kernels too, and exclude LoRA and MixLoRA).
SECTION_NAMES = ("nf4", "lora", "mixlora", "multi_lora")
# Where each section is registered: the method that writes it, for the error that names it.
SECTION_OWNERS = {
    "nf4": "lora_keras.qlora",
    "lora": "lora_keras.lora",
    "mixlora": "lora_keras.mixlora.apply",
    "multi_lora": "lora_keras.multi_lora.apply",
}
_SECTIONS = {}

Section = collections.namedtuple("Section", ["describe", "restore"])


def register_section(name, describe, restore):
    """Lets a method record itself in an adapted backbone's config, and put itself back on load.

    Args:
        name: one of `SECTION_NAMES`.
        describe: `describe(backbone)` returns the section's settings (JSON-able), or None
            when the method is not applied to `backbone`.
        restore: `restore(backbone, settings)` applies the method to a plain backbone rebuilt
            from its config, before the saved weights load.
    """
    if name not in SECTION_NAMES:
        raise ValueError(f"Unknown section {name!r}; known sections: {', '.join(SECTION_NAMES)}.")
    _SECTIONS[name] = Section(describe, restore)


def describe_sections(backbone):
    """`{section name: settings}` of every method applied to `backbone`."""
    described = {name: section.describe(backbone) for name, section in _SECTIONS.items()}
    return {name: described[name] for name in SECTION_NAMES if described.get(name) is not None}


def settle_class(backbone):
    """Makes `backbone` an `AdaptedGPT2Backbone` while a method is applied, else KerasHub's own.

    Called by every method after it changes a backbone: the only place a backbone's class is
    set, so a `.keras` file records every method applied, and a backbone with none left
    (`lk.unwrap_lora`, `lk.dequantize_nf4`) saves and loads with no lora_keras import.
    """
    if not describe_sections(backbone):
        backbone.__class__ = keras_hub.models.GPT2Backbone
    elif not isinstance(backbone, AdaptedGPT2Backbone):  # an old name loaded keeps its name
        backbone.__class__ = AdaptedGPT2Backbone


@keras.saving.register_keras_serializable(package="lora_keras")
class AdaptedGPT2Backbone(keras_hub.models.GPT2Backbone):
    """A `GPT2Backbone` whose config also says which lora_keras methods adapted it, and how.

    A backbone is rebuilt from its config when a `.keras` file loads, which would bring back
    plain projections and then fail to place the adapter weights ("Layer 'query' expected 2
    variables, but received 0"). Each method applied adds a section to the config (`"nf4"`,
    `"lora"`, `"mixlora"`), and `from_config` applies each again, in `SECTION_NAMES` order,
    before the weights load. The methods make a backbone this class (`settle_class`); it is
    never built directly.
    """

    def get_config(self):
        return {**super().get_config(), **describe_sections(self)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        sections = {name: config.pop(name) for name in SECTION_NAMES if name in config}
        missing = [name for name in sections if name not in _SECTIONS]
        if missing:
            owners = ", ".join(f"`import {SECTION_OWNERS[name]}`" for name in missing)
            raise ValueError(
                f"This model was saved with lora_keras's {', '.join(missing)}, which is not "
                f"loaded in this process. Load it with `lk.load_model(path)`, or {owners} "
                "before `keras.saving.load_model`."
            )
        backbone = keras_hub.models.GPT2Backbone.from_config(config)
        for name, settings in sections.items():
            _SECTIONS[name].restore(backbone, settings)
        # Keras files the weights under the class's name (`layers/lora_gpt2_backbone/...`):
        # a file saved under an old name loads, and saves again, under that name.
        backbone.__class__ = cls
        return backbone


# Files written by lora_keras 0.1.0 name one class per method: each name stays registered, as a
# subclass that adds nothing, since Keras also files the weights under the class's name.
@keras.saving.register_keras_serializable(package="lora_keras")
class LoraGPT2Backbone(AdaptedGPT2Backbone):
    """What lora_keras 0.1.0 called a backbone with LoRA (and NF4): an `AdaptedGPT2Backbone`."""


@keras.saving.register_keras_serializable(package="lora_keras")
class NF4GPT2Backbone(AdaptedGPT2Backbone):
    """What lora_keras 0.1.0 called a backbone with NF4 kernels: an `AdaptedGPT2Backbone`."""


@keras.saving.register_keras_serializable(package="lora_keras")
class MixLoraGPT2Backbone(AdaptedGPT2Backbone):
    """What lora_keras 0.1.0 called a backbone with MixLoRA (and LoRA): an `AdaptedGPT2Backbone`."""
