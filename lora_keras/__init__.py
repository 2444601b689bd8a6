"""LoRA and its family for KerasHub GPT-2, with honest time and memory measurements."""

from lora_keras.adapters import load_adapter, save_adapter
from lora_keras.data import embedded_corpus, load_texts, make_lm_datasets, preprocessor_detached
from lora_keras.experiments import compare, sweep, tutorial_optimizer
from lora_keras.experiments.compare import choose_weights
from lora_keras.experiments.environment import describe_environment
from lora_keras.gpt2_surgery import TARGETS
from lora_keras.injection import (
    LoraGPT2Backbone,
    apply_lora,
    lora_layers,
    merge_lora,
    unmerge_lora,
    unwrap_lora,
)
from lora_keras.layers import (
    BaseLoraLayer,
    BaseNF4Layer,
    LoraDense,
    LoraEinsumDense,
    NF4Dense,
    NF4EinsumDense,
)
from lora_keras.measure import (
    LossHistory,
    MemoryCallback,
    StepTimeCallback,
    estimate_for_model,
    estimate_training_memory,
    explain_estimate,
    format_bytes,
    memory_probe,
    stored_weight_bytes,
)
from lora_keras.models import GPT2_ARCHITECTURES, KNOWN_PRESETS, load_gpt2, pretrained_reachable
from lora_keras.quant import NF4_VALUES, NF4Tensor, nf4_dequantize, nf4_quantize
from lora_keras.quant.nf4_backbone import NF4GPT2Backbone, is_nf4_quantized, nf4_layers
from lora_keras.quant.quantize_model import dequantize_nf4, quantize_nf4
from lora_keras.report import write_report
from lora_keras.summary import format_trainable_summary, trainable_summary

__version__ = "0.1.0"

__all__ = [
    "GPT2_ARCHITECTURES",
    "KNOWN_PRESETS",
    "NF4_VALUES",
    "TARGETS",
    "BaseLoraLayer",
    "BaseNF4Layer",
    "LoraDense",
    "LoraEinsumDense",
    "LoraGPT2Backbone",
    "LossHistory",
    "NF4Dense",
    "NF4EinsumDense",
    "NF4GPT2Backbone",
    "NF4Tensor",
    "MemoryCallback",
    "StepTimeCallback",
    "apply_lora",
    "choose_weights",
    "compare",
    "dequantize_nf4",
    "describe_environment",
    "embedded_corpus",
    "estimate_for_model",
    "estimate_training_memory",
    "explain_estimate",
    "format_bytes",
    "format_trainable_summary",
    "is_nf4_quantized",
    "load_adapter",
    "load_gpt2",
    "load_texts",
    "lora_layers",
    "make_lm_datasets",
    "memory_probe",
    "merge_lora",
    "nf4_dequantize",
    "nf4_layers",
    "nf4_quantize",
    "preprocessor_detached",
    "pretrained_reachable",
    "quantize_nf4",
    "save_adapter",
    "stored_weight_bytes",
    "sweep",
    "trainable_summary",
    "tutorial_optimizer",
    "unmerge_lora",
    "unwrap_lora",
    "write_report",
]
