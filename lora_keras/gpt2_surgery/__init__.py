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

from lora_keras.gpt2_surgery.adapted_backbone import (
    SECTION_NAMES,
    SECTION_OWNERS,
    AdaptedGPT2Backbone,
    LoraGPT2Backbone,
    MixLoraGPT2Backbone,
    NF4GPT2Backbone,
    describe_sections,
    register_section,
    settle_class,
)
from lora_keras.gpt2_surgery.layout import (
    FEEDFORWARD_TARGETS,
    TARGET_ATTRIBUTES,
    TARGETS,
    MixtureTransformerDecoder,
    check_layout,
    check_targets,
    find_backbone,
    get_layer,
    get_mixture,
    layer_path,
    replace_sublayer,
    set_layer,
    set_mixture,
)
from lora_keras.gpt2_surgery.lookups import (
    forget_traced_functions,
    freeze_all_but_adapters,
    is_nf4_quantized,
    lora_layers,
    mixlora_layers,
    multi_lora_layers,
    nf4_layers,
    turn_off_dropout,
)
from lora_keras.gpt2_surgery.multi_adapter_lm import (
    MultiAdapterGPT2CausalLM,
    check_multi_adapter_lm,
    refuse_if_multi_lora,
    settle_multi_adapter_lm,
)

__all__ = [
    "AdaptedGPT2Backbone",
    "FEEDFORWARD_TARGETS",
    "LoraGPT2Backbone",
    "MixLoraGPT2Backbone",
    "MixtureTransformerDecoder",
    "MultiAdapterGPT2CausalLM",
    "NF4GPT2Backbone",
    "SECTION_NAMES",
    "SECTION_OWNERS",
    "TARGETS",
    "TARGET_ATTRIBUTES",
    "check_layout",
    "check_multi_adapter_lm",
    "check_targets",
    "describe_sections",
    "find_backbone",
    "forget_traced_functions",
    "freeze_all_but_adapters",
    "get_layer",
    "get_mixture",
    "is_nf4_quantized",
    "layer_path",
    "lora_layers",
    "mixlora_layers",
    "multi_lora_layers",
    "nf4_layers",
    "refuse_if_multi_lora",
    "register_section",
    "replace_sublayer",
    "set_layer",
    "set_mixture",
    "settle_class",
    "settle_multi_adapter_lm",
    "turn_off_dropout",
]
