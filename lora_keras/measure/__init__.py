"""Measuring a training run: memory probes, Keras callbacks, and a first-principles estimate.

Its modules are imported by name (the package's public names come from `lora_keras`), so that
the report reads `estimate_text` and `units` without starting Keras.
"""
