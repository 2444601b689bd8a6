"""The planner counts weights from the architecture alone: the counts of built tiny models."""

import pytest
from conftest import TINY_GPT2, make_tiny_lm

import lora_keras as lk
from lora_keras.experiments.train_one import MODES
from lora_keras.mixlora.settings import MIXLORA_DEFAULTS
from lora_keras.models.architectures import GPT2_ARCHITECTURES
from lora_keras.planner.counting import MODES as PLANNER_MODES
from lora_keras.planner.counting import count_params
from lora_keras.planner.predict import predict_peak

SETTINGS = [
    {"rank": 4, "targets": ["query", "value"]},
    {"rank": 2, "targets": ["key", "attention_output", "ffn_in", "ffn_out"]},
]


@pytest.mark.parametrize("mode", PLANNER_MODES)
@pytest.mark.parametrize("settings", SETTINGS, ids=["query+value", "four-targets"])
def test_counts_match_a_built_model(mode, settings):
    if mode == "keras_lora" and settings["targets"] != ["query", "value"]:
        pytest.skip("Keras's enable_lora takes no targets")
    mixlora = {**MIXLORA_DEFAULTS, "num_experts": 3, "rank": settings["rank"]}
    lm = make_tiny_lm()
    MODES[mode](lm, {**settings, "alpha": 8.0, "mixlora": mixlora})
    built = lk.trainable_summary(lm)
    counted = count_params(TINY_GPT2, mode, settings["rank"], settings["targets"], mixlora)
    assert (counted["trainable"], counted["total"]) == (built["trainable"], built["total"])
    if mode == "qlora":
        kernels = sum(
            layer.kernel_shape[0] * int(__import__("math").prod(layer.kernel_shape[1:]))
            for layer in lk.nf4_layers(lm).values()
        )
        assert counted["nf4"] == kernels


def test_mixdora_counts_match_a_built_model():
    mixlora = {**MIXLORA_DEFAULTS, "num_experts": 2, "variant": "dora"}
    lm = make_tiny_lm()
    MODES["mixlora"](lm, {"rank": 4, "alpha": 8.0, "targets": ["query"], "mixlora": mixlora})
    built = lk.trainable_summary(lm)
    counted = count_params(TINY_GPT2, "mixlora", mixlora=mixlora)
    assert (counted["trainable"], counted["total"]) == (built["trainable"], built["total"])


def test_base_lora_trains_the_designs_count():
    base = GPT2_ARCHITECTURES["gpt2_base_en"]
    assert count_params(base, "lora")["trainable"] == 12 * 2 * (768 * 4 + 4 * 768) == 147456
    assert count_params(base, "full")["total"] == 124439808  # as KerasHub's preset


@pytest.mark.parametrize("mode", ["full", "lora", "dora", "mixlora"])
def test_estimate_for_model_is_the_planners_prediction(mode):
    """A built model's estimate and the plan of its configuration are one model."""
    from lora_keras.measure.estimate import estimate_for_model

    preset = "gpt2_tiny"
    lm = lk.load_gpt2(preset, weights="random")
    settings = {"rank": 4, "alpha": 8.0, "targets": ["query", "value"], "mixlora": None}
    MODES[mode](lm, settings)
    estimate = estimate_for_model(lm, batch_size=2, sequence_length=32)
    planned, _, _ = predict_peak(preset, mode, 2, 32, backend="tensorflow", device_kind="cpu")
    runtime = planned.pop("runtime")
    planned["total"] -= runtime
    assert estimate == planned
