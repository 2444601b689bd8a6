"""Measuring a training run: memory probes, Keras callbacks, and a first-principles estimate."""

from lora_keras.measure.callbacks import LossHistory, MemoryCallback, StepTimeCallback
from lora_keras.measure.estimate import (
    estimate_for_model,
    estimate_training_memory,
    explain_estimate,
    stored_weight_bytes,
)
from lora_keras.measure.memory import memory_probe
from lora_keras.measure.units import format_bytes

__all__ = [
    "LossHistory",
    "MemoryCallback",
    "StepTimeCallback",
    "estimate_for_model",
    "estimate_training_memory",
    "explain_estimate",
    "format_bytes",
    "memory_probe",
    "stored_weight_bytes",
]
