"""Every touch of KerasHub's private GPT-2 attributes, in one place, and the one adapted backbone.

KerasHub does not expose the projections inside `TransformerDecoder` and
`CachedMultiHeadAttention`, so LoRA has to reach them through private
attributes. Keeping that knowledge here means a KerasHub release that renames
them breaks one module, and `check_layout` says so in words instead of an
`AttributeError` deep inside training.

Every method (`lora_keras.lora`, `lora_keras.qlora`, `lora_keras.mixlora`,
`lora_keras.multi_lora`) finds its layers with the lookups here, freezes with
`freeze_all_but_adapters`, and records itself in the config of `AdaptedGPT2Backbone`
through a section it registers (`register_section`): a backbone's class changes here
and nowhere else, as does a task model's (`MultiAdapterGPT2CausalLM`, which takes
`adapter_ids` and overrides KerasHub's `call` and `generate_step` to hand them over).
"""

import collections

import keras
import keras_hub

from lora_keras.layers import BaseLoraLayer, BaseMultiLoraLayer, BaseNF4Layer, MixLoraFeedForward
from lora_keras.layers.adapter_routing import check_adapter_ids
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
                    "lora_keras/gpt2_surgery.py."
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
                    f"{keras_hub.__version__}). Update lora_keras/gpt2_surgery.py."
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


def lora_layers(model):
    """The LoRA wrappers in `model`, keyed by stable paths like `transformer_layer_0/query`."""
    return _layers_at_targets(model, lambda layer: isinstance(layer, BaseLoraLayer))


def multi_lora_layers(model):
    """The multi-adapter LoRA wrappers in `model` (`lk.apply_multi_lora`), keyed by path."""
    return _layers_at_targets(model, lambda layer: isinstance(layer, BaseMultiLoraLayer))


def nf4_layers(model):
    """The NF4 layers of `model`'s transformer blocks (under LoRA or not), keyed by path."""
    return {
        path: frozen
        for path, frozen in _layers_at_targets(model, lambda layer: True, frozen=True).items()
        if isinstance(frozen, BaseNF4Layer)
    }


def _layers_at_targets(model, keep, frozen=False):
    backbone = find_backbone(model)
    found = {}
    for index, block in enumerate(backbone.transformer_layers):
        for target in TARGETS:
            layer = get_layer(block, target)
            if frozen and isinstance(layer, (BaseLoraLayer, BaseMultiLoraLayer)):
                layer = layer.original_layer  # the layer holding the frozen kernel
            if keep(layer):
                found[layer_path(index, target)] = layer
    return found


def is_nf4_quantized(model):
    """Whether `model`'s transformer block kernels are stored as NF4 (`lk.quantize_nf4`).

    Example: refuse what NF4 kernels cannot do, such as merging in place.
    """
    return bool(nf4_layers(model))


def mixlora_layers(model):
    """The MixLoRA blocks in `model`, keyed by paths like `transformer_layer_0/ffn`."""
    backbone = find_backbone(model)
    found = {}
    for index, block in enumerate(backbone.transformer_layers):
        mixture = get_mixture(block)
        if mixture is not None:
            found[layer_path(index, "ffn")] = mixture
    return found


def freeze_all_but_adapters(backbone):
    """Makes the LoRA weights (one adapter or many) and the MixLoRA routers and experts the only
    trainable weights."""
    adapters = [
        *lora_layers(backbone).values(),
        *mixlora_layers(backbone).values(),
        *multi_lora_layers(backbone).values(),
    ]
    adapter_ids = {id(v) for layer in adapters for v in layer.adapter_weights().values()}
    for variable in backbone.weights:
        variable.trainable = id(variable) in adapter_ids


def forget_traced_functions(model):
    """Drops the functions Keras traced from `model`, so the next call traces them again.

    A trace bakes in Python-level choices: which layer sits at `query`, and
    whether a wrapper is `merged`. After changing either, an old
    `predict_function` would add a merged update twice, and an old
    `generate_function` would ignore new LoRA layers.
    """
    for owner in (model, find_backbone(model)):
        for name in ("train_function", "test_function", "predict_function", "generate_function"):
            if getattr(owner, name, None) is not None:
                setattr(owner, name, None)


# --- The one adapted backbone ----------------------------------------------------------------

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


# --- Many adapters: the task model that takes `adapter_ids` ---------------------------------


def refuse_if_multi_lora(model, action, reason):
    """Raises, naming `action` and `reason`, if `model` holds several adapters (m-LoRA)."""
    layers = multi_lora_layers(model)
    if layers:
        names = next(iter(layers.values())).adapter_names
        raise ValueError(
            f"Cannot {action}: this model holds several LoRA adapters ({', '.join(names)}) "
            f"on one frozen base (`lk.apply_multi_lora`), and {reason} Save each adapter with "
            "`lk.save_adapter(model, path, adapter=NAME)` and load it into its own model."
        )


def check_multi_adapter_lm(model):
    """Refuses a model that cannot become a `MultiAdapterGPT2CausalLM`: a backbone, a subclass."""
    if type(model) not in (keras_hub.models.GPT2CausalLM, MultiAdapterGPT2CausalLM):
        raise ValueError(
            "Several adapters need a `keras_hub.models.GPT2CausalLM`, whose inputs gain "
            f"'adapter_ids' and hand them to the layers; got {type(model).__name__}. Build "
            "one around the backbone: `keras_hub.models.GPT2CausalLM(backbone, "
            "preprocessor=None)`."
        )


def settle_multi_adapter_lm(model):
    """Makes a `GPT2CausalLM` with several adapters a `MultiAdapterGPT2CausalLM`."""
    check_multi_adapter_lm(model)
    model.__class__ = MultiAdapterGPT2CausalLM


@keras.saving.register_keras_serializable(package="lora_keras")
class MultiAdapterGPT2CausalLM(keras_hub.models.GPT2CausalLM):
    """A `GPT2CausalLM` holding several LoRA adapters, whose inputs also take `adapter_ids`.

    `adapter_ids` (int32, one per sequence) says which adapter each sequence
    uses: its position in the dict `lk.apply_multi_lora` was given
    (`lk.adapter_names(model)`). The model hands them to its multi-LoRA layers
    for the length of each call (`AdapterRouting`), in `call`, `fit`, `predict`,
    `evaluate` and `generate` alike; the rest is KerasHub's. `lk.apply_multi_lora`
    makes a model this class; it is never built directly.
    """

    def _routing(self):
        return next(iter(multi_lora_layers(self).values())).routing

    def _split_ids(self, inputs):
        """`(inputs without adapter_ids, adapter_ids)`, or a ValueError naming the adapters."""
        if not isinstance(inputs, dict) or "adapter_ids" not in inputs:
            names = self._routing().adapter_names
            listed = ", ".join(f"{k}: {name!r}" for k, name in enumerate(names))
            raise ValueError(
                f"This model holds several adapters ({listed}): its inputs need "
                "'adapter_ids' (int32, one per sequence) beside 'token_ids' and "
                "'padding_mask', e.g. `{**x, 'adapter_ids': np.array([0, 1])}`."
            )
        rest = {key: value for key, value in inputs.items() if key != "adapter_ids"}
        return rest, inputs["adapter_ids"]

    def _check_data(self, x):
        """Checks the `adapter_ids` of in-memory data before a traced loop hides their values."""
        if isinstance(x, dict):
            _, ids = self._split_ids(x)
            check_adapter_ids(ids, self._routing().adapter_names)

    def call(self, inputs, training=None, mask=None, **kwargs):
        inputs, adapter_ids = self._split_ids(inputs)
        if isinstance(mask, dict):
            mask = {key: value for key, value in mask.items() if key != "adapter_ids"}
        with self._routing().ids_for_call(adapter_ids):
            return super().call(inputs, training=training, mask=mask, **kwargs)

    def generate_step(self, inputs, stop_token_ids=None):
        inputs, adapter_ids = self._split_ids(inputs)
        with self._routing().ids_for_call(adapter_ids):
            return super().generate_step(inputs, stop_token_ids=stop_token_ids)

    def fit(self, x=None, *args, **kwargs):
        self._check_data(x)
        return super().fit(x, *args, **kwargs)

    def evaluate(self, x=None, *args, **kwargs):
        self._check_data(x)
        return super().evaluate(x, *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        self._check_data(x)
        return super().predict(x, *args, **kwargs)

    def train_on_batch(self, x, *args, **kwargs):
        self._check_data(x)
        return super().train_on_batch(x, *args, **kwargs)

    def test_on_batch(self, x, *args, **kwargs):
        self._check_data(x)
        return super().test_on_batch(x, *args, **kwargs)

    def predict_on_batch(self, x):
        self._check_data(x)
        return super().predict_on_batch(x)
