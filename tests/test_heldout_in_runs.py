"""Held-out evaluation in every run: which documents, and what a run records of them."""

import keras
import numpy as np
import pytest
from conftest import make_short_text_lm, tiny_compare

from lora_keras.data.corpus_split import corpus_split
from lora_keras.experiments.train_one import evaluate_sets
from lora_keras.quality.heldout_data import keep_documents, split_heldout

DOCUMENTS = [f"document {i}" for i in range(10)]


@pytest.mark.parametrize(
    ("wanted", "needed", "held"),
    [(3, 4, 3), (3, 8, 2), (3, 10, 0), (20, 0, 10)],
)
def test_the_first_documents_are_held_out_as_far_as_the_steps_leave(wanted, needed, held):
    train, heldout = split_heldout(DOCUMENTS, wanted, needed)
    assert heldout == DOCUMENTS[:held] and train == DOCUMENTS[held:]


def test_a_tf_dataset_is_split_the_same_way():
    import tensorflow as tf

    texts = tf.data.Dataset.from_tensor_slices(DOCUMENTS)
    train, heldout = split_heldout(texts, 3, 4)
    assert heldout == DOCUMENTS[:3]
    assert [t.decode() for t in train.as_numpy_iterator()] == DOCUMENTS[3:]


def test_what_to_keep_by_default_and_when_asked(tmp_path):
    documents, source = keep_documents("gpt2_mini", None, 32)
    assert documents == corpus_split("recipe").keep_heldout
    assert "pretraining families" in source
    assert keep_documents("gpt2_mini", "none", 32) == (None, None)
    assert keep_documents("gpt2_tiny", None, 32) == (None, None)  # random weights: nothing known
    text = tmp_path / "keep.txt"
    text.write_text("\n\n".join(DOCUMENTS))
    documents, source = keep_documents("gpt2_tiny", str(text), 4)
    assert documents == DOCUMENTS[:4] and source == f"{text}, its first 4 documents"


def test_the_loss_falls_on_what_trained_and_stays_when_nothing_does(tmp_path):
    keras.utils.set_random_seed(0)
    lm = make_short_text_lm(tmp_path / "cache")
    texts = {"trained": DOCUMENTS[:4], "other": DOCUMENTS[4:8]}
    before, _ = evaluate_sets(lm, texts, batch_size=2, sequence_length=16)
    again, seconds = evaluate_sets(lm, texts, batch_size=2, sequence_length=16)
    assert again == before and seconds > 0  # evaluating trains nothing
    lm.compile(optimizer=keras.optimizers.Adam(1e-2), loss=lm.loss)
    lm.fit(np.array(texts["trained"]), epochs=5, batch_size=2, verbose=0)
    after, _ = evaluate_sets(lm, texts, batch_size=2, sequence_length=16)
    assert after["trained"]["loss"] < before["trained"]["loss"] - 0.5
    assert after["trained"]["tokens"] == before["trained"]["tokens"]


@pytest.mark.large
def test_a_run_records_its_held_out_losses_and_a_still_model_keeps_them(tmp_path, monkeypatch):
    results = tiny_compare(tmp_path, monkeypatch, learning_rate=1e-30, eval_documents=8)
    [run] = results["runs"]
    target = run["eval"]["target"]
    assert set(run["eval"]) == {"target"}  # gpt2_tiny has random weights: no keep set
    assert target["tokens"] > 0 and run["eval_time_s"] > 0
    # An update of 1e-30 changes no weight: after equals before.
    assert target["after"] == pytest.approx(target["before"], rel=1e-6)
    assert run["eval_sources"]["target"] == "8 documents of the data, held out of training"
