"""Held-out evaluation and the corpus split it reads: figures checked by hand, every refusal."""

import math

import keras
import numpy as np
import pytest
from conftest import make_short_text_lm

from lora_keras.data.corpus_split import corpus_split
from lora_keras.data.embedded_corpus import FAMILIES, NUM_DOCUMENTS, embedded_corpus
from lora_keras.quality import evaluate_heldout

# Portable: CI runs these under JAX and torch too (`-m backends`).
pytestmark = pytest.mark.backends

CORPUS = embedded_corpus()[:4]  # each longer than the model's 16 tokens
DOCUMENTS = [*CORPUS, "A short one."]  # so documents differ in their number of target tokens


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    keras.utils.set_random_seed(0)
    return make_short_text_lm(tmp_path_factory.mktemp("cache"))


def by_hand(lm, documents):
    """The token-weighted mean loss of all the documents in one pass, with NumPy's log-softmax."""
    x, y, weights = lm.preprocessor(documents)
    x = {key: keras.ops.convert_to_numpy(value) for key, value in x.items()}
    logits = keras.ops.convert_to_numpy(lm(x)).astype("float64")  # (batch, seq, vocabulary)
    logits -= logits.max(axis=-1, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    y, weights = keras.ops.convert_to_numpy(y), keras.ops.convert_to_numpy(weights)
    target_log_p = np.take_along_axis(log_p, y[..., None], axis=-1)[..., 0]
    return -float((target_log_p * weights).sum() / weights.sum()), int(weights.sum())


def test_the_loss_is_the_token_weighted_mean_whatever_the_batching(lm):
    expected, tokens = by_hand(lm, DOCUMENTS)
    for batch_size in (2, 5):  # 2 leaves a last batch of 1 document
        result = evaluate_heldout(lm, DOCUMENTS, batch_size=batch_size)
        assert set(result) == {"loss", "perplexity", "tokens"}
        assert result["tokens"] == tokens and isinstance(result["tokens"], int)
        assert result["loss"] == pytest.approx(expected, rel=1e-5)
        assert result["perplexity"] == pytest.approx(math.exp(result["loss"]))
    # A mean of the batches' means would differ: the check above can tell the two apart.
    batch_means = [evaluate_heldout(lm, DOCUMENTS[i : i + 2])["loss"] for i in (0, 2, 4)]
    assert abs(np.mean(batch_means) - expected) > 1e-3


def test_evaluation_is_deterministic_and_trains_nothing(lm):
    before = [keras.ops.convert_to_numpy(weight) for weight in lm.weights]
    first = evaluate_heldout(lm, DOCUMENTS, batch_size=4)
    assert evaluate_heldout(lm, DOCUMENTS, batch_size=4) == first
    for old, new in zip(before, lm.weights, strict=True):
        np.testing.assert_array_equal(old, keras.ops.convert_to_numpy(new))
    assert lm.preprocessor.sequence_length == 16


def test_max_batches_and_sequence_length_choose_what_is_read(lm):
    assert evaluate_heldout(lm, DOCUMENTS, batch_size=2, max_batches=2) == evaluate_heldout(
        lm, DOCUMENTS[:4], batch_size=2
    )
    # Every corpus document is longer than 8 tokens: 8 targets each, after the start token.
    assert evaluate_heldout(lm, CORPUS, sequence_length=8)["tokens"] == 8 * len(CORPUS)
    # Bytes, as a tf.data iterator gives them, read the same as strings.
    encoded = [document.encode("utf-8") for document in DOCUMENTS]
    assert evaluate_heldout(lm, encoded) == evaluate_heldout(lm, DOCUMENTS)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"texts": []}, "texts is empty: there is nothing to evaluate on"),
        ({"texts": "One document."}, "texts must be a list of documents, got a single string"),
        ({"texts": ["fine", 3]}, "texts must hold strings, got int"),
        ({"batch_size": 0}, "batch_size must be an integer of at least 1, got 0"),
        ({"max_batches": 0}, "max_batches must be an integer of at least 1, got 0"),
        ({"sequence_length": True}, "sequence_length must be an integer of at least 1, got True"),
        ({"sequence_length": 17}, r"sequence_length=17 is above the model's maximum: .* 16 tok"),
    ],
)
def test_bad_arguments_are_refused(lm, kwargs, message):
    kwargs = {"texts": DOCUMENTS, **kwargs}
    with pytest.raises(ValueError, match=message):
        evaluate_heldout(lm, **kwargs)


def test_a_model_that_cannot_read_text_is_refused(lm):
    with pytest.raises(ValueError, match="takes a keras_hub CausalLM .*, got GPT2Backbone"):
        evaluate_heldout(lm.backbone, DOCUMENTS)
    preprocessor, lm.preprocessor = lm.preprocessor, None
    try:
        with pytest.raises(ValueError, match="has no preprocessor attached"):
            evaluate_heldout(lm, DOCUMENTS)
    finally:
        lm.preprocessor = preprocessor


def test_the_default_corpus_is_unchanged_and_families_are_its_slices():
    everything = embedded_corpus()
    assert len(everything) == NUM_DOCUMENTS == len(set(everything))
    for index, family in enumerate(FAMILIES):
        assert embedded_corpus(families=family) == everything[index :: len(FAMILIES)]
    assert embedded_corpus(families=("weather", "recipe")) == [
        document for i, document in enumerate(everything) if i % 6 in (1, 2)
    ]
    assert everything[2].startswith(("How to make", "A simple recipe for"))
    # More documents extend the same stream: the first 100 of a family stay.
    assert embedded_corpus(families="recipe", per_family=150)[:100] == everything[2::6]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"families": ["poems"]}, "Unknown family 'poems'. The embedded corpus has the families "),
        ({"families": []}, "families is empty: name at least one of mishap, weather, recipe"),
        ({"per_family": 0}, "per_family must be at least 1 document, got 0"),
        ({"per_family": 2.5}, "per_family must be an integer, got 2.5"),
    ],
)
def test_bad_corpus_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        embedded_corpus(**kwargs)


def test_the_split_is_disjoint_and_its_held_out_documents_never_move():
    split = corpus_split("recipe")
    parts = (split.pretrain, split.keep_heldout, split.target_train, split.target_heldout)
    assert [len(part) for part in parts] == [5 * 368, 5 * 32, 368, 32]
    assert len(set().union(*parts)) == sum(len(part) for part in parts)
    recipes = embedded_corpus(families="recipe", per_family=400)
    assert split.target_heldout == recipes[:32] and split.target_train == recipes[32:]
    assert set(split.keep_heldout) | set(split.pretrain) == set(
        embedded_corpus(families=[f for f in FAMILIES if f != "recipe"], per_family=400)
    )
    smaller = corpus_split("recipe", heldout_per_family=32, per_family=100)
    assert smaller.keep_heldout == split.keep_heldout
    assert smaller.target_heldout == split.target_heldout
    assert set(smaller.pretrain) < set(split.pretrain)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"target_family": "poems"}, "Unknown target family 'poems'. The embedded corpus has"),
        ({"heldout_per_family": 0}, "heldout_per_family must be an integer of at least 1, got 0"),
        ({"per_family": None}, "per_family must be an integer of at least 1, got None"),
        ({"heldout_per_family": 10, "per_family": 10}, "heldout_per_family=10 leaves no docum"),
    ],
)
def test_bad_split_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        corpus_split(**{"target_family": "recipe", **kwargs})
