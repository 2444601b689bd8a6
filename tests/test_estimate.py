import keras
import keras_hub
import pytest

from lora_keras.measure.estimate import estimate_for_model, estimate_training_memory
from lora_keras.measure.estimate_text import COMPONENT_NOTES, explain_estimate
from lora_keras.planner.framework import combine, framework_for

TINY = dict(
    num_layers=2,
    hidden_dim=8,
    num_heads=2,
    intermediate_dim=32,
    vocabulary_size=50,
    trainable_params=100,
    total_params=1000,
    batch_size=2,
    sequence_length=16,
)


def test_components_follow_the_weight_counts_and_add_up():
    estimate = estimate_training_memory(**TINY)
    assert estimate["weights"] == 1000 * 4
    assert estimate["gradients"] == 100 * 4
    assert estimate["optimizer_state"] == 2 * 100 * 4
    parts = [estimate[name] for name in ("weights", "gradients", "optimizer_state", "activations")]
    assert estimate["total"] == sum(parts)


def test_activations_scale_linearly_with_batch_and_not_with_trainable_weights():
    one = estimate_training_memory(**{**TINY, "batch_size": 1})["activations"]
    assert estimate_training_memory(**{**TINY, "batch_size": 4})["activations"] == 4 * one
    all_trainable = estimate_training_memory(**{**TINY, "batch_size": 1, "trainable_params": 1000})
    assert all_trainable["activations"] == one


def test_activations_count_the_attention_scores_and_the_logits():
    base = estimate_training_memory(**TINY, dropout=False)["activations"]
    # Without dropout one (batch, heads, seq, seq) probability tensor per block is saved.
    more_heads = estimate_training_memory(**{**TINY, "num_heads": 3}, dropout=False)
    assert more_heads["activations"] - base == 2 * 1 * 16 * 16 * 4 * 2
    # The logits in the compute dtype and their float32 softmax gradient.
    more_vocabulary = estimate_training_memory(**{**TINY, "vocabulary_size": 51}, dropout=False)
    assert more_vocabulary["activations"] - base == 2 * 16 * (4 + 4)
    half = estimate_training_memory(**TINY, compute_dtype_bytes=2, dropout=False)["activations"]
    assert half < base


def test_invalid_sizes_are_refused():
    with pytest.raises(ValueError, match="`batch_size` must be a positive integer; got 0."):
        estimate_training_memory(**{**TINY, "batch_size": 0})
    with pytest.raises(
        ValueError, match=r"`trainable_params` must be between 0 and `total_params`"
    ):
        estimate_training_memory(**{**TINY, "trainable_params": 1001})


def test_nf4_weights_are_counted_at_their_packed_size():
    estimate = estimate_training_memory(**TINY, nf4_params=800)
    assert estimate["weights"] == round(200 * 4 + 800 * 4.126953125 / 8)
    plain = estimate_training_memory(**TINY, nf4_params=800, nf4_bits_per_weight=4.5)
    assert plain["weights"] == 200 * 4 + 800 * 4.5 / 8
    with pytest.raises(ValueError, match="`nf4_params` must be between 0 and the frozen weights"):
        estimate_training_memory(**TINY, nf4_params=901)


def test_explanation_has_one_sentence_per_component():
    sentences = explain_estimate(estimate_training_memory(**TINY))
    # No DoRA layers, no `dora` part.
    assert [sentence.split(":")[0] for sentence in sentences] == list(COMPONENT_NOTES)[:4]
    assert sentences[2].startswith("optimizer_state: 800 bytes (")
    assert "AdamW keeps 2 slots" in sentences[2]


@pytest.fixture(scope="module")
def backbone():
    return keras_hub.models.GPT2Backbone(
        vocabulary_size=50,
        num_layers=2,
        num_heads=2,
        hidden_dim=8,
        intermediate_dim=32,
        max_sequence_length=16,
    )


def test_estimate_for_model_reads_the_backbone_and_its_trainable_weights(backbone):
    total = sum(int(keras.ops.size(weight)) for weight in backbone.weights)
    estimate = estimate_for_model(backbone, batch_size=2, sequence_length=16)
    # The planner's model: TensorFlow's graph keeps 3 logits-sized tensors, then its share.
    first = estimate_training_memory(
        **{**TINY, "trainable_params": total, "total_params": total}, logits_copies=3
    )
    framework = framework_for("tensorflow", "cpu")
    expected, _ = combine(first, framework, 50 * 8 * 4, 2 * 16 * 50 * 4)
    del expected["runtime"]  # measured apart, never estimated
    expected["total"] -= framework.runtime
    assert estimate == expected
    causal_lm = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    assert estimate_for_model(causal_lm, batch_size=2, sequence_length=16) == expected
    backbone.trainable = False
    try:
        frozen = estimate_for_model(backbone, batch_size=2, sequence_length=16)
    finally:
        backbone.trainable = True
    assert frozen["gradients"] == frozen["optimizer_state"] == 0
    assert frozen["activations"] == first["activations"]
    on_gpu = estimate_for_model(backbone, 2, 16, jit_compile=True, backend="jax", device_kind="gpu")
    assert on_gpu["framework"] == 0 and on_gpu["activations"] < estimate["activations"]


def test_half_precision_keeps_layer_norms_in_float32():
    half = estimate_training_memory(**TINY, compute_dtype_bytes=2)
    all_half = estimate_training_memory(**TINY, compute_dtype_bytes=2, norm_dtype_bytes=2)
    full = estimate_training_memory(**TINY)
    assert all_half["activations"] < half["activations"] < full["activations"]
    casts = estimate_training_memory(**TINY, compute_dtype_bytes=2, kernel_casts=True)
    assert casts["activations"] - half["activations"] == 1000 * 2  # each weight cast once


def test_mixlora_saves_each_chosen_experts_gelu():
    mix = estimate_training_memory(**TINY, mixlora_top_k=2)
    # (2k - 1) = 3 tensors of (batch x seq x intermediate) a block, float32.
    assert mix["mixlora"] == 2 * 3 * 2 * 16 * 32 * 4
    assert mix["total"] == sum(v for k, v in mix.items() if k != "total")


def test_every_component_of_a_prediction_is_explained():
    estimate = {
        "weights": 1,
        "gradients": 1,
        "optimizer_state": 2,
        "activations": 3,
        "framework": 1,
        "optimizer_update": 2,
        "mixlora": 1,
        "total": 11,
    }
    names = [sentence.split(":")[0] for sentence in explain_estimate(estimate)]
    assert names == [name for name in COMPONENT_NOTES if name in estimate]


def test_estimate_for_model_refuses_other_models():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    with pytest.raises(
        ValueError, match="expects a KerasHub GPT2CausalLM or GPT2Backbone; got Sequential"
    ):
        estimate_for_model(model, batch_size=1, sequence_length=1)
