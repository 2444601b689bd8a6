"""Where KerasHub keeps each projection of a GPT-2 block, and how to swap one."""

import keras
import keras_hub

from lora_keras.layers import BaseLoraLayer, BaseMultiLoraLayer, BaseNF4Layer, MixLoraFeedForward
from lora_keras.targets import TARGETS, check_targets  # noqa: F401  (used as surgery.check_targets)

# target name -> (attribute of the block holding the layer, or None for the
# block itself; attribute naming the layer)
TARGET_ATTRIBUTES = {
    "query": ("_self_attention_layer", "_query_dense"),
    "key": ("_self_attention_layer", "_key_dense"),
    "value": ("_self_attention_layer", "_value_dense"),
    "attention_output": ("_self_attention_layer", "_output_dense"),
    "ffn_in": (None, "_feedforward_intermediate_dense"),
    "ffn_out": (None, "_feedforward_output_dense"),
}
# The two Dense layers a MixLoRA block replaces together.
FEEDFORWARD_TARGETS = ("ffn_in", "ffn_out")


def find_backbone(model):
    """Returns the `GPT2Backbone` of a `GPT2CausalLM`, or the backbone itself."""
    backbone = getattr(model, "backbone", model)
    if not isinstance(backbone, keras_hub.models.GPT2Backbone):
        raise ValueError(
            f"Expected a KerasHub GPT-2 model (`keras_hub.models.GPT2CausalLM` or "
            f"`keras_hub.models.GPT2Backbone`), got {type(model).__name__}. Load one with "
            "`lk.load_gpt2(...)` or `keras_hub.models.GPT2CausalLM.from_preset(...)`."
        )
    return backbone


def _owner(block, target):
    owner_attribute, layer_attribute = TARGET_ATTRIBUTES[target]
    owner = block if owner_attribute is None else getattr(block, owner_attribute)
    return owner, layer_attribute


def check_layout(backbone):
    """Fails with a clear message if KerasHub's GPT-2 internals are not as expected."""
    for block in backbone.transformer_layers:
        for target in TARGETS:
            owner_attribute, layer_attribute = TARGET_ATTRIBUTES[target]
            path = ".".join(a for a in (owner_attribute, layer_attribute) if a)
            try:
                layer = get_layer(block, target)
            except AttributeError as error:
                raise RuntimeError(
                    f"KerasHub {keras_hub.__version__} has no attribute '{path}' on "
                    f"{type(block).__name__}; lora_keras knows the layout of keras-hub 0.21-0.32. "
                    "Install a keras-hub version listed in requirements.txt, or update "
                    "lora_keras/gpt2_surgery/layout.py."
                ) from error
            expected = (
                keras.layers.EinsumDense,
                keras.layers.Dense,
                BaseLoraLayer,
                BaseMultiLoraLayer,
                BaseNF4Layer,
            )
            if target in FEEDFORWARD_TARGETS and get_mixture(block):
                # `set_mixture` put the block at ffn_in and an Identity at ffn_out.
                expected = (MixLoraFeedForward, keras.layers.Identity)
            if not isinstance(layer, expected):
                raise RuntimeError(
                    f"Expected '{path}' of {type(block).__name__} to be an EinsumDense or "
                    f"Dense layer, found {type(layer).__name__} (keras-hub "
                    f"{keras_hub.__version__}). Update lora_keras/gpt2_surgery/layout.py."
                )


def get_layer(block, target):
    """The layer currently at `target` in one transformer block."""
    owner, layer_attribute = _owner(block, target)
    return getattr(owner, layer_attribute)


def set_layer(block, target, new_layer):
    """Puts `new_layer` at `target`, where the block's `call` will use it."""
    owner, layer_attribute = _owner(block, target)
    replace_sublayer(owner, layer_attribute, new_layer)


def replace_sublayer(owner, layer_attribute, new_layer):
    """Puts `new_layer` at `owner.<layer_attribute>` of a built layer, tracked as its sublayer."""
    old_layer = getattr(owner, layer_attribute)
    # A built Keras layer locks its list of sublayers; swapping the entry keeps
    # weight tracking exact (no stale layer left behind) without unlocking it.
    owner._tracker.replace_tracked_value("layers", old_layer, new_layer)
    setattr(owner, layer_attribute, new_layer)


def layer_path(block_index, target):
    """A stable key for one target layer, e.g. `transformer_layer_3/value`."""
    return f"transformer_layer_{block_index}/{target}"


@keras.saving.register_keras_serializable(package="lora_keras")
class MixtureTransformerDecoder(keras_hub.layers.TransformerDecoder):
    """A `TransformerDecoder` that hands its padding mask to its MixLoRA block.

    KerasHub's decoder calls the feed-forward layers with the hidden states
    only, so a router there cannot tell padding from tokens; this subclass
    (set by `set_mixture`) lends the mask to the block for the length of the
    call, leaving KerasHub's own `call` to do everything else.
    """

    def call(self, decoder_sequence, encoder_sequence=None, decoder_padding_mask=None, **kwargs):
        with get_layer(self, "ffn_in").padding_mask_for_call(decoder_padding_mask):
            return super().call(
                decoder_sequence,
                encoder_sequence,
                decoder_padding_mask=decoder_padding_mask,
                **kwargs,
            )


def get_mixture(block):
    """The MixLoRA block of one transformer block, or None."""
    layer = get_layer(block, "ffn_in")
    return layer if isinstance(layer, MixLoraFeedForward) else None


def set_mixture(block, mixture):
    """Puts a MixLoRA `mixture` in place of the block's feed-forward `Dense` pair.

    KerasHub calls `ffn_in` then `ffn_out`; the mixture computes both (its
    experts need the activations before `ffn_out`), so it takes `ffn_in`'s
    place and an `Identity` takes `ffn_out`'s.
    """
    set_layer(block, "ffn_in", mixture)
    set_layer(block, "ffn_out", keras.layers.Identity(name="mixlora_identity"))
    block.__class__ = MixtureTransformerDecoder


# --- Lookups every method shares -------------------------------------------------------------
