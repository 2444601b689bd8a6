"""LoRA and its family for KerasHub GPT-2, with honest time and memory measurements."""

__version__ = "0.1.0"
