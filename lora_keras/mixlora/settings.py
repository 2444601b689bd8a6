"""MixLoRA's settings and their defaults, without Keras: `compare` records and checks them
before any run, and `apply_mixlora` takes its keyword defaults from here."""

# What `compare --modes mixlora` uses unless its `mixlora` argument says otherwise.
MIXLORA_DEFAULTS = {
    "num_experts": 8,
    "top_k": 2,
    "rank": 8,
    "alpha": 16.0,
    "aux_loss_coef": 0.01,
    "dropout": 0.0,
    "variant": "lora",
}

# "lora" is MixLoRA, "dora" MixDoRA: the keys of `lora_keras.mixlora.apply.VARIANTS`.
MIXLORA_VARIANTS = ("lora", "dora")
