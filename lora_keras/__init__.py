"""LoRA and its family for KerasHub GPT-2, with honest time and memory measurements."""

import sys

from lora_keras.lazy import lazy_attributes

# Every public name and the module it comes from, imported on first use: `import lora_keras`
# and `lora-keras --help` then start no TensorFlow.
_EXPORTS = {
    "load_adapter": "lora_keras.adapters",
    "save_adapter": "lora_keras.adapters",
    "embedded_corpus": "lora_keras.data",
    "load_texts": "lora_keras.data",
    "make_lm_datasets": "lora_keras.data",
    "preprocessor_detached": "lora_keras.data",
    "compare": "lora_keras.experiments",
    "sweep": "lora_keras.experiments",
    "tutorial_optimizer": "lora_keras.experiments",
    "choose_weights": "lora_keras.experiments.compare",
    "describe_environment": "lora_keras.experiments.environment",
    "TARGETS": "lora_keras.targets",
    "LoraGPT2Backbone": "lora_keras.injection",
    "apply_lora": "lora_keras.injection",
    "lora_layers": "lora_keras.injection",
    "merge_lora": "lora_keras.injection",
    "unmerge_lora": "lora_keras.injection",
    "unwrap_lora": "lora_keras.injection",
    "BaseLoraLayer": "lora_keras.layers",
    "LoraDense": "lora_keras.layers",
    "LoraEinsumDense": "lora_keras.layers",
    "ChunkedLossCausalLM": "lora_keras.levers.chunked_loss",
    "LossHistory": "lora_keras.measure",
    "MemoryCallback": "lora_keras.measure",
    "StepTimeCallback": "lora_keras.measure",
    "estimate_for_model": "lora_keras.measure",
    "estimate_training_memory": "lora_keras.measure",
    "explain_estimate": "lora_keras.measure",
    "format_bytes": "lora_keras.measure",
    "memory_probe": "lora_keras.measure",
    "GPT2_ARCHITECTURES": "lora_keras.models",
    "KNOWN_PRESETS": "lora_keras.models",
    "load_gpt2": "lora_keras.models",
    "pretrained_reachable": "lora_keras.models",
    "write_report": "lora_keras.report",
    "format_trainable_summary": "lora_keras.summary",
    "trainable_summary": "lora_keras.summary",
}
__getattr__, __dir__ = lazy_attributes(globals(), _EXPORTS)

if "keras" in sys.modules:
    # Keras already runs here, so registering the LoRA classes costs nothing, and
    # `keras.saving.load_model` finds them in a `.keras` file without any lora_keras call first.
    import lora_keras.injection  # noqa: F401

__version__ = "0.1.0"

__all__ = [
    "GPT2_ARCHITECTURES",
    "KNOWN_PRESETS",
    "TARGETS",
    "BaseLoraLayer",
    "ChunkedLossCausalLM",
    "LoraDense",
    "LoraEinsumDense",
    "LoraGPT2Backbone",
    "LossHistory",
    "MemoryCallback",
    "StepTimeCallback",
    "apply_lora",
    "choose_weights",
    "compare",
    "describe_environment",
    "embedded_corpus",
    "estimate_for_model",
    "estimate_training_memory",
    "explain_estimate",
    "format_bytes",
    "format_trainable_summary",
    "load_adapter",
    "load_gpt2",
    "load_texts",
    "lora_layers",
    "make_lm_datasets",
    "memory_probe",
    "merge_lora",
    "preprocessor_detached",
    "pretrained_reachable",
    "save_adapter",
    "sweep",
    "trainable_summary",
    "tutorial_optimizer",
    "unmerge_lora",
    "unwrap_lora",
    "write_report",
]
