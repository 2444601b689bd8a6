"""The one table of GPT-2 shapes: the four KerasHub presets and our own `gpt2_tiny` and `gpt2_mini`.

Each entry is exactly the keyword arguments of `keras_hub.models.GPT2Backbone`, so a random-weights
model is `GPT2Backbone(**GPT2_ARCHITECTURES[preset])` and has the real model's time and memory.
The KerasHub rows are checked against KerasHub's own preset metadata in `tests/test_models.py`.

`gpt2_tiny` is ours, for CPUs, tests and quick workshop runs: 4 layers, 4 heads, hidden 128. It has
no pretrained weights; its 4,096-token vocabulary is the size its local tokenizer is trained up to
(the embedded corpus fills fewer of them; the rest are rows no token id reaches, and
`lm.provenance["tokenizer"]` says how many the tokenizer has).

`gpt2_mini` is ours too, and pretrained: 4 layers, 4 heads, hidden 128, 256 positions, 2,048-token
vocabulary (its tokenizer holds 1,678), about 1.1 million weights. The package ships its weights
and tokenizer (`lora_keras/models/presets/gpt2_mini/`), made by `python -m
lora_keras.models.pretrain_mini` on the embedded corpus less the recipe family
(`GPT2_MINI_HELDOUT_FAMILY`), which it has never read, so fine-tuning on recipes is a new domain.
"""

GPT2_ARCHITECTURES = {
    "gpt2_tiny": {
        "vocabulary_size": 4096,
        "num_layers": 4,
        "num_heads": 4,
        "hidden_dim": 128,
        "intermediate_dim": 512,
        "max_sequence_length": 512,
    },
    "gpt2_mini": {
        "vocabulary_size": 2048,
        "num_layers": 4,
        "num_heads": 4,
        "hidden_dim": 128,
        "intermediate_dim": 512,
        "max_sequence_length": 256,
    },
    "gpt2_base_en": {
        "vocabulary_size": 50257,
        "num_layers": 12,
        "num_heads": 12,
        "hidden_dim": 768,
        "intermediate_dim": 3072,
        "max_sequence_length": 1024,
    },
    "gpt2_medium_en": {
        "vocabulary_size": 50257,
        "num_layers": 24,
        "num_heads": 16,
        "hidden_dim": 1024,
        "intermediate_dim": 4096,
        "max_sequence_length": 1024,
    },
    "gpt2_large_en": {
        "vocabulary_size": 50257,
        "num_layers": 36,
        "num_heads": 20,
        "hidden_dim": 1280,
        "intermediate_dim": 5120,
        "max_sequence_length": 1024,
    },
    "gpt2_extra_large_en": {
        "vocabulary_size": 50257,
        "num_layers": 48,
        "num_heads": 25,
        "hidden_dim": 1600,
        "intermediate_dim": 6400,
        "max_sequence_length": 1024,
    },
}

KNOWN_PRESETS = tuple(GPT2_ARCHITECTURES)

# Presets with no KerasHub download behind them: the package builds them itself.
BUILTIN_PRESETS = ("gpt2_tiny", "gpt2_mini")
# The builtin presets whose pretrained weights and tokenizer the package ships (no network).
SHIPPED_PRESETS = ("gpt2_mini",)
# The family of the embedded corpus that gpt2_mini never saw in pretraining: its fine-tuning target.
GPT2_MINI_HELDOUT_FAMILY = "recipe"


def has_pretrained_weights(preset):
    """Whether `load_gpt2(preset, weights="pretrained")` can give pretrained weights.

    True for the KerasHub presets (downloaded, or from kagglehub's cache) and for the presets
    whose weights the package ships (`SHIPPED_PRESETS`, loaded with no network); False for
    `gpt2_tiny`, which is random-weights only, and for names that are no preset here (a local
    folder is not asked about here: it carries its own weights).

    Example:
    ```python
    has_pretrained_weights("gpt2_mini")  # True, and no network is needed for it
    has_pretrained_weights("gpt2_tiny")  # False: use weights="random"
    ```
    """
    if preset not in GPT2_ARCHITECTURES:
        return False
    return preset not in BUILTIN_PRESETS or preset in SHIPPED_PRESETS
