"""MixLoRA's default settings, without Keras: `compare` records and checks them before any run.

`apply_mixlora`'s keyword defaults are these (tests/test_mixlora_model.py checks it), and
`MIXLORA_VARIANTS` are the keys of `lora_keras.mixlora.VARIANTS`.
"""

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

MIXLORA_VARIANTS = ("lora", "dora")
