"""LoRA and its family for KerasHub GPT-2, with honest time and memory measurements."""

import sys

from lora_keras.lazy import lazy_attributes

# Every public name and the module it comes from, imported on first use: `import lora_keras`
# and `lora-keras --help` then start no TensorFlow.
_EXPORTS = {
    "load_adapter": "lora_keras.adapters",
    "save_adapter": "lora_keras.adapters",
    "ArrayBatches": "lora_keras.data",
    "CorpusSplit": "lora_keras.data.corpus_split",
    "corpus_split": "lora_keras.data.corpus_split",
    "embedded_corpus": "lora_keras.data",
    "load_texts": "lora_keras.data",
    "make_lm_datasets": "lora_keras.data",
    "preprocessor_detached": "lora_keras.data",
    "data_parallel": "lora_keras.distribution",
    "compare": "lora_keras.experiments",
    "sweep": "lora_keras.experiments",
    "tutorial_optimizer": "lora_keras.experiments",
    "Interrupted": "lora_keras.experiments.compare",
    "PlannedRun": "lora_keras.experiments.run_spec",
    "RunSpec": "lora_keras.experiments.run_spec",
    "choose_weights": "lora_keras.experiments.compare",
    "describe_environment": "lora_keras.experiments.environment",
    "AdaptedGPT2Backbone": "lora_keras.gpt2_surgery",
    "LoraGPT2Backbone": "lora_keras.gpt2_surgery",
    "MixLoraGPT2Backbone": "lora_keras.gpt2_surgery",
    "NF4GPT2Backbone": "lora_keras.gpt2_surgery",
    "is_nf4_quantized": "lora_keras.gpt2_surgery",
    "lora_layers": "lora_keras.gpt2_surgery",
    "mixlora_layers": "lora_keras.gpt2_surgery",
    "nf4_layers": "lora_keras.gpt2_surgery",
    "BaseDoraLayer": "lora_keras.layers",
    "BaseLoraLayer": "lora_keras.layers",
    "BaseNF4Layer": "lora_keras.layers",
    "DoraDense": "lora_keras.layers",
    "DoraEinsumDense": "lora_keras.layers",
    "LoraDense": "lora_keras.layers",
    "LoraEinsumDense": "lora_keras.layers",
    "MixDoraFeedForward": "lora_keras.layers",
    "MixLoraFeedForward": "lora_keras.layers",
    "NF4Dense": "lora_keras.layers",
    "NF4EinsumDense": "lora_keras.layers",
    "NF4_VALUES": "lora_keras.layers.nf4_codec",
    "NF4Tensor": "lora_keras.layers.nf4_codec",
    "nf4_dequantize": "lora_keras.layers.nf4_codec",
    "nf4_quantize": "lora_keras.layers.nf4_codec",
    "ChunkedLossCausalLM": "lora_keras.levers.chunked_loss",
    "Options": "lora_keras.levers.options",
    "apply_lora": "lora_keras.lora",
    "merge_lora": "lora_keras.lora",
    "unmerge_lora": "lora_keras.lora",
    "unwrap_lora": "lora_keras.lora",
    "LossHistory": "lora_keras.measure.callbacks",
    "MemoryCallback": "lora_keras.measure.callbacks",
    "StepTimeCallback": "lora_keras.measure.callbacks",
    "estimate_for_model": "lora_keras.measure.estimate",
    "estimate_training_memory": "lora_keras.measure.estimate",
    "explain_estimate": "lora_keras.measure.estimate_text",
    "stored_weight_bytes": "lora_keras.measure.estimate",
    "memory_probe": "lora_keras.measure.memory",
    "format_bytes": "lora_keras.units",
    "apply_mixlora": "lora_keras.mixlora.apply",
    "expert_loads": "lora_keras.mixlora.apply",
    "GPT2_ARCHITECTURES": "lora_keras.models",
    "KNOWN_PRESETS": "lora_keras.models",
    "load_gpt2": "lora_keras.models",
    "pretrained_reachable": "lora_keras.models",
    "has_pretrained_weights": "lora_keras.models",
    "GPT2_MINI_HELDOUT_FAMILY": "lora_keras.models",
    "notebook_setting": "lora_keras.notebook",
    "start_notebook": "lora_keras.notebook",
    "evaluate_heldout": "lora_keras.quality",
    "plan": "lora_keras.planner",
    "dequantize_nf4": "lora_keras.qlora",
    "quantize_nf4": "lora_keras.qlora",
    "write_report": "lora_keras.report",
    "load_model": "lora_keras.saving",
    "format_trainable_summary": "lora_keras.summary",
    "trainable_summary": "lora_keras.summary",
    "TARGETS": "lora_keras.targets",
}
__getattr__, __dir__ = lazy_attributes(globals(), _EXPORTS)

if "keras" in sys.modules:
    # Keras already runs here, so registering lora_keras's classes and methods costs nothing,
    # and `keras.saving.load_model` loads a saved adapted model with no lora_keras call first.
    import lora_keras.saving  # noqa: F401

__version__ = "0.1.0"

__all__ = sorted(_EXPORTS)
