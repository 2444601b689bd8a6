"""MixLoRA's settings and their defaults, without Keras: `compare` records and checks them
before any run, and `apply_mixlora` takes its keyword defaults from here."""

# What `compare --modes mixlora` uses unless its `mixlora` argument says otherwise.
MIXLORA_DEFAULTS = {
    "num_experts": 8,
    "top_k": 2,
    "rank": 8,
    "alpha": 16.0,
    # The MixLoRA reference's load-balance loss: one over all blocks' routing, weighted 0.001.
    "aux_loss_coef": 0.001,
    "dropout": 0.0,
    "aux_loss_scope": "model",
    "variant": "lora",
}
# What settings saved by lora_keras 0.1.0 meant where they say nothing: a loss per block.
BEFORE_SCOPES = {"aux_loss_scope": "block"}


def saved_settings(settings):
    """MixLoRA settings as read from a file, with what a file of 0.1.0 left unsaid filled in."""
    return {**BEFORE_SCOPES, **settings}


# "lora" is MixLoRA, "dora" MixDoRA: the keys of `lora_keras.mixlora.apply.VARIANTS`.
MIXLORA_VARIANTS = ("lora", "dora")
# Where the load-balance loss is taken: `lora_keras.layers.mixlora_math.BALANCE_SCOPES`.
AUX_LOSS_SCOPES = ("model", "block")
# The paper uses 8; every expert adds its LoRA factors to each block and its share of tokens
# shrinks, so past this a setting is far more likely a typo than an experiment.
MAX_EXPERTS = 64
