"""`load_texts` for every source, the embedded corpus, and `make_lm_datasets` feeding `fit`."""

import importlib
import json

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from conftest import make_short_text_lm

from lora_keras.data import embedded_corpus, load_texts, make_lm_datasets, preprocessor_detached

load_texts_module = importlib.import_module("lora_keras.data.load_texts")


def strings(dataset):
    return [text.decode("utf-8") for text in dataset.as_numpy_iterator()]


def token_rows(dataset):
    return np.concatenate([x["token_ids"] for x, _, _ in dataset.as_numpy_iterator()])


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    return make_short_text_lm(tmp_path_factory.mktemp("cache"))


def test_embedded_corpus_is_large_varied_and_deterministic():
    documents = embedded_corpus()
    assert len(documents) >= 500
    assert sum(len(document.encode("utf-8")) for document in documents) >= 200_000
    assert all(document.strip() == document and document for document in documents)
    assert len(set(documents)) == len(documents)
    assert all(document.isascii() for document in documents)
    # Six families take turns; the letters are the sixth.
    assert all(document.startswith("Dear ") for document in documents[5::6])
    assert embedded_corpus() == documents
    assert embedded_corpus(seed=1) != documents


def test_load_texts_embedded_is_the_corpus_as_scalar_strings():
    texts = load_texts("embedded")
    assert texts.element_spec == tf.TensorSpec((), tf.string)
    assert strings(texts) == embedded_corpus()


def test_load_texts_reddit_tifu_keeps_the_documents(monkeypatch):
    calls, tfds_load = [], tfds.load

    def spy(*args, **kwargs):
        calls.append((args, kwargs))
        return tfds_load(*args, **kwargs)

    monkeypatch.setattr(tfds, "load", spy)
    monkeypatch.setattr(load_texts_module, "host_reachable", lambda address: True)
    # The mock makes 5 random documents a split and ignores slicing, so the split is checked
    # as passed on.
    with tfds.testing.mock_data(num_examples=5):
        texts = load_texts("reddit_tifu", split="train[:95%]")
        assert texts.element_spec == tf.TensorSpec((), tf.string)
        assert len(strings(texts)) == 5
    assert calls == [(("reddit_tifu",), {"split": "train[:95%]", "as_supervised": True})]


def test_load_texts_reddit_tifu_offline_fails_at_once(monkeypatch):
    monkeypatch.setattr(load_texts_module, "host_reachable", lambda address: False)
    monkeypatch.setattr(tfds, "load", lambda *args, **kwargs: pytest.fail("tfds.load was called"))
    with pytest.raises(
        ConnectionError,
        match="it is not downloaded yet and drive.google.com does not answer. With no network, "
        "use load_texts\\('embedded'\\)",
    ):
        load_texts("reddit_tifu")


def test_load_texts_reddit_tifu_failing_download_says_what_to_do(monkeypatch):
    monkeypatch.setattr(load_texts_module, "host_reachable", lambda address: True)

    def offline(*args, **kwargs):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(tfds, "load", offline)
    with pytest.raises(
        RuntimeError,
        match="Could not load TFDS reddit_tifu \\(OSError: Temporary failure in name resolution\\)"
        ".*with no network, use load_texts\\('embedded'\\)",
    ):
        load_texts("reddit_tifu")


def test_load_texts_txt_splits_documents_on_blank_lines(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("line one\nline two\n\n  \nsecond\n \t\nthird  \n\n", encoding="utf-8")
    assert strings(load_texts(str(path))) == ["line one\nline two", "second", "third"]


def test_load_texts_jsonl_reads_the_named_field(tmp_path):
    path = tmp_path / "records.jsonl"
    records = [{"text": "first", "body": "un"}, {"text": " ", "body": "deux"}]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n\n", encoding="utf-8")
    assert strings(load_texts(str(path))) == ["first"]
    assert strings(load_texts(str(path), text_field="body")) == ["un", "deux"]


def test_load_texts_folder_reads_its_files_in_name_order(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.txt").write_text("from b", encoding="utf-8")
    (tmp_path / "a.txt").write_text("from a\n\nagain a", encoding="utf-8")
    (tmp_path / "sub" / "c.jsonl").write_text('{"text": "from c"}', encoding="utf-8")
    (tmp_path / "notes.md").write_text("not read", encoding="utf-8")
    assert strings(load_texts(str(tmp_path))) == ["from a", "again a", "from b", "from c"]


def test_load_texts_bad_input(tmp_path):
    missing = tmp_path / "missing.txt"
    with pytest.raises(FileNotFoundError, match=f"No such file or folder: '{missing}'"):
        load_texts(str(missing))
    (tmp_path / "empty.txt").write_text("\n \n", encoding="utf-8")
    with pytest.raises(ValueError, match="empty.txt holds no text"):
        load_texts(str(tmp_path / "empty.txt"))
    (tmp_path / "folder").mkdir()
    with pytest.raises(ValueError, match="The folder .*folder holds no .txt or .jsonl file"):
        load_texts(str(tmp_path / "folder"))
    (tmp_path / "data.jsonl").write_text('{"body": "x"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 1: no 'text' field; its fields are \['body'\]"):
        load_texts(str(tmp_path / "data.jsonl"))
    (tmp_path / "broken.jsonl").write_text('{"text": "x"}\n{"text": \n', encoding="utf-8")
    with pytest.raises(ValueError, match="broken.jsonl, line 2: not valid JSON"):
        load_texts(str(tmp_path / "broken.jsonl"))
    (tmp_path / "list.jsonl").write_text('{"text": "x"}\n"just a string"\n', encoding="utf-8")
    with pytest.raises(ValueError, match="list.jsonl, line 2: a JSON str, not an object"):
        load_texts(str(tmp_path / "list.jsonl"))
    (tmp_path / "number.jsonl").write_text('{"text": 3}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="number.jsonl, line 1: 'text' holds a int, not text"):
        load_texts(str(tmp_path / "number.jsonl"))
    (tmp_path / "table.csv").write_text("text\nx\n", encoding="utf-8")
    with pytest.raises(ValueError, match="Cannot read .*table.csv: texts come from .txt files"):
        load_texts(str(tmp_path / "table.csv"))
    with pytest.raises(ValueError, match="split='test' applies to TFDS sources; 'embedded' has"):
        load_texts("embedded", split="test")


def test_make_lm_datasets_tokenizes_once_into_fixed_batches(lm):
    texts = embedded_corpus()[:40]
    train, validation = make_lm_datasets(
        texts, lm, batch_size=4, num_batches=5, validation_batches=2, shuffle=False
    )
    assert train.element_spec == validation.element_spec
    x, y, sample_weight = train.element_spec
    assert x["token_ids"].shape == y.shape == sample_weight.shape == (4, 16)
    assert train.cardinality() == 5 and validation.cardinality() == 2
    # Unshuffled, validation is the first 8 documents and training the next 20.
    expected, _, _ = lm.preprocessor(texts[8:12])
    np.testing.assert_array_equal(next(iter(train))[0]["token_ids"], expected["token_ids"])
    all_train, none = make_lm_datasets(tf.data.Dataset.from_tensor_slices(texts), lm.preprocessor)
    assert all_train.cardinality() == 10 and none is None


def test_make_lm_datasets_shuffles_by_seed_and_holds_validation_out(lm):
    # Documents whose first 16 tokens differ, so token rows stand for documents.
    texts = [f"Note {number}: nothing else." for number in range(40)]

    def split(seed):
        return make_lm_datasets(texts, lm, num_batches=8, validation_batches=2, seed=seed)

    train, validation = split(seed=0)
    again, _ = split(seed=0)
    other, _ = split(seed=1)
    np.testing.assert_array_equal(token_rows(train), token_rows(again))
    assert not np.array_equal(token_rows(train), token_rows(other))
    held_out = {row.tobytes() for row in token_rows(validation)}
    assert not held_out & {row.tobytes() for row in token_rows(train)}


def test_make_lm_datasets_bad_input(lm):
    texts = embedded_corpus()[:40]
    with pytest.raises(
        ValueError,
        match=r"^The texts yield 8 batches of 4 after 2 held out for validation; 100 were asked "
        r"for: lower num_batches or batch_size, or give more text\.$",
    ):
        make_lm_datasets(texts, lm, num_batches=100, validation_batches=2)
    with pytest.raises(ValueError, match="The texts yield 0 batches of 4; at least 1 is needed"):
        make_lm_datasets(texts[:3], lm)
    with pytest.raises(ValueError, match="The texts are empty: there is nothing to train on."):
        make_lm_datasets([], lm)
    with pytest.raises(ValueError, match="num_batches must be at least 1, or None for all."):
        make_lm_datasets(texts, lm, num_batches=0)
    with pytest.raises(ValueError, match="The texts never end .* Give num_batches."):
        make_lm_datasets(tf.data.Dataset.from_tensor_slices(texts).repeat(), lm)


def test_fit_on_make_lm_datasets_with_the_preprocessor_detached(lm):
    train, _ = make_lm_datasets(embedded_corpus()[:8], lm, batch_size=4)
    preprocessor = lm.preprocessor
    # Tracing a train step costs ~15 s on two CPU cores; what is tested here is the data.
    lm.compile(run_eagerly=True)
    before = keras.ops.convert_to_numpy(lm.backbone.token_embedding.embeddings)
    with preprocessor_detached(lm):
        assert lm.preprocessor is None
        history = lm.fit(train, verbose=0)
    assert lm.preprocessor is preprocessor
    assert np.isfinite(history.history["loss"]).all()
    assert not np.allclose(
        keras.ops.convert_to_numpy(lm.backbone.token_embedding.embeddings), before
    )
    with pytest.raises(RuntimeError, match="inside"), preprocessor_detached(lm):
        raise RuntimeError("inside")
    assert lm.preprocessor is preprocessor
