import keras
import keras_hub
import pytest

from lora_keras.measure.estimate import estimate_for_model, estimate_training_memory
from lora_keras.measure.estimate_text import COMPONENT_NOTES, explain_estimate

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
    expected = estimate_training_memory(
        **{**TINY, "trainable_params": total, "total_params": total}
    )
    assert estimate == expected
    causal_lm = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    assert estimate_for_model(causal_lm, batch_size=2, sequence_length=16) == expected
    backbone.trainable = False
    try:
        frozen = estimate_for_model(backbone, batch_size=2, sequence_length=16)
    finally:
        backbone.trainable = True
    assert frozen["gradients"] == frozen["optimizer_state"] == 0
    assert frozen["activations"] == estimate["activations"]


def test_estimate_for_model_refuses_other_models():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    with pytest.raises(
        ValueError, match="expects a KerasHub GPT2CausalLM or GPT2Backbone; got Sequential"
    ):
        estimate_for_model(model, batch_size=1, sequence_length=1)
