"""The one table of GPT-2 shapes: the four KerasHub presets and `gpt2_tiny`, our CPU-sized model.

Each entry is exactly the keyword arguments of `keras_hub.models.GPT2Backbone`, so a random-weights
model is `GPT2Backbone(**GPT2_ARCHITECTURES[preset])` and has the real model's time and memory.
The KerasHub rows are checked against KerasHub's own preset metadata in `tests/test_models.py`.

`gpt2_tiny` is ours, for CPUs, tests and quick workshop runs: 4 layers, 4 heads, hidden 128. It has
no pretrained weights; its 4,096-token vocabulary is the size its local tokenizer is trained up to
(the embedded corpus fills fewer of them; the rest are rows no token id reaches, and
`lm.provenance["tokenizer"]` says how many the tokenizer has).
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

# Presets with no KerasHub download behind them.
BUILTIN_PRESETS = ("gpt2_tiny",)
