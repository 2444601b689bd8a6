"""Without TensorFlow: texts as lists, NumPy batches for `fit`, and a JAX comparison end to end.

In-process tests make `optional_tensorflow()` answer `None`; the comparison runs the real command
line in processes where `tests/no_tensorflow/sitecustomize.py` hides every TensorFlow module.
"""

import importlib
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import make_short_text_lm

import lora_keras as lk
from lora_keras.data import (
    ArrayBatches,
    embedded_corpus,
    load_texts,
    make_lm_datasets,
    preprocessor_detached,
)
from lora_keras.data.optional_tensorflow import check_tfds_installed, optional_tensorflow
from lora_keras.experiments.train_one import _describe_data
from lora_keras.models import load_gpt2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLOCKER = os.path.join(ROOT, "tests", "no_tensorflow")
batching = importlib.import_module("lora_keras.data.batching")
load_texts_module = importlib.import_module("lora_keras.data.load_texts")


@pytest.fixture
def no_tensorflow(monkeypatch):
    for module in (batching, load_texts_module):
        monkeypatch.setattr(module, "optional_tensorflow", lambda: None)


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    return make_short_text_lm(tmp_path_factory.mktemp("cache"))


def batches_of(dataset):
    """Every batch as NumPy, from a `tf.data.Dataset` or `ArrayBatches`."""
    if isinstance(dataset, ArrayBatches):
        return [dataset[index] for index in range(len(dataset))]
    return list(dataset.as_numpy_iterator())


def test_tensorflow_is_found_here_and_tfds_reports_what_is_missing(monkeypatch):
    assert optional_tensorflow() is sys.modules["tensorflow"]
    check_tfds_installed()  # both installed here: no error
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == "tensorflow_datasets" else real(name, *args),
    )
    with pytest.raises(
        ImportError,
        match=r"^TFDS reddit_tifu needs tensorflow_datasets, not installed in this Python\. "
        r"Install it \(`pip install tensorflow-datasets`\), or use the embedded corpus "
        r"\(load_texts\('embedded'\), --data embedded\) or a local \.txt/\.jsonl file",
    ):
        load_texts("reddit_tifu")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)
    with pytest.raises(
        ImportError, match="needs tensorflow and tensorflow_datasets, .*Install them"
    ):
        load_texts("reddit_tifu")


def test_kerashubs_python_tokenizing_equals_its_tf_data_graph(tmp_path, monkeypatch):
    """What runs without TensorFlow tokenizes as the tutorial's `fit` does in tf.data."""
    monkeypatch.setenv("LORA_KERAS_CACHE", str(tmp_path))
    tf = optional_tensorflow()
    preprocessor = load_gpt2("gpt2_tiny", weights="random", sequence_length=32).preprocessor
    documents = embedded_corpus()[:64] + [
        "  two  spaces\n\nand newlines",
        "caf\u00e9 na\u00efve \u65e5\u672c",
        "end <|endoftext|> inside",
        "short",
        "it's we'll 123 4567",
    ]
    in_python = preprocessor(documents)
    graph = tf.data.Dataset.from_tensor_slices(documents).batch(len(documents))
    in_graph = next(iter(graph.map(preprocessor)))
    keras.tree.map_structure(np.testing.assert_array_equal, in_python, in_graph)
    x, y, sample_weight = keras.tree.map_structure(np.asarray, in_python)
    assert x["token_ids"].shape == y.shape == sample_weight.shape == (69, 32)
    assert x["padding_mask"][:64].all()  # the corpus's documents are cut at 32 tokens
    assert not sample_weight[-2].all()  # "short" is padded


def test_load_texts_gives_lists_without_tensorflow(no_tensorflow, tmp_path):
    texts = load_texts("embedded")
    assert texts == embedded_corpus()
    (tmp_path / "two.txt").write_text("first\n\nsecond\n")
    assert load_texts(str(tmp_path / "two.txt")) == ["first", "second"]
    with pytest.raises(ValueError, match="split='test' applies to TFDS sources"):
        load_texts("embedded", split="test")
    assert _describe_data("embedded", texts) == (
        "embedded corpus (600 documents generated in-package, no download; no TensorFlow: "
        "NumPy's shuffle, not tf.data's)"
    )


def test_array_batches_are_full_consecutive_slices():
    arrays = ({"token_ids": np.arange(20).reshape(10, 2)}, np.arange(10), np.ones(10))
    batches = ArrayBatches(arrays, batch_size=4)
    assert len(batches) == 2  # the last 2 rows are no full batch
    x, y, sample_weight = batches[1]
    np.testing.assert_array_equal(x["token_ids"], [[8, 9], [10, 11], [12, 13], [14, 15]])
    np.testing.assert_array_equal(y, [4, 5, 6, 7])
    assert sample_weight.shape == (4,)
    for index in (2, -1):
        with pytest.raises(IndexError, match=f"^Batch {index} of 2 batches.$"):
            batches[index]


def test_without_tensorflow_the_batches_are_the_tensorflow_ones(lm, monkeypatch):
    texts = embedded_corpus()[:40]

    def split():
        return make_lm_datasets(
            texts, lm, batch_size=4, num_batches=5, validation_batches=2, shuffle=False
        )

    with_tf = split()
    monkeypatch.setattr(batching, "optional_tensorflow", lambda: None)
    without_tf = split()
    for ours, theirs, count in zip(without_tf, with_tf, (5, 2), strict=True):
        assert isinstance(ours, ArrayBatches) and len(ours) == count
        ours, theirs = batches_of(ours), batches_of(theirs)
        assert len(ours) == len(theirs) == count
        for mine, reference in zip(ours, theirs, strict=True):
            assert keras.tree.map_structure(np.shape, mine) == (
                {"token_ids": (4, 16), "padding_mask": (4, 16)},
                (4, 16),
                (4, 16),
            )
            keras.tree.map_structure(np.testing.assert_array_equal, mine, reference)
    # Every document is longer than 16 tokens: truncated, so no padding and no end token.
    first = batches_of(without_tf[0])[0]
    assert first[0]["padding_mask"].all()
    assert (first[0]["token_ids"][:, 0] == lm.preprocessor.tokenizer.start_token_id).all()


def test_without_tensorflow_numpy_shuffles_by_seed(lm, no_tensorflow):
    texts = [f"Note {number}: nothing else." for number in range(40)]

    def rows(seed, **kwargs):
        train, validation = make_lm_datasets(
            texts, lm, num_batches=8, validation_batches=2, seed=seed, **kwargs
        )
        return [
            np.concatenate([x["token_ids"] for x, _, _ in batches_of(part)])
            for part in (train, validation)
        ]

    train, validation = rows(seed=0)
    np.testing.assert_array_equal(train, rows(seed=0)[0])
    assert not np.array_equal(train, rows(seed=1)[0])
    assert not np.array_equal(train, rows(seed=0, shuffle=False)[0])
    held_out = {row.tobytes() for row in validation}
    assert not held_out & {row.tobytes() for row in train}
    assert len(held_out) == 8 and len({row.tobytes() for row in train}) == 32
    with pytest.raises(ValueError, match="The texts yield 10 batches of 4; 11 were asked for"):
        make_lm_datasets(texts, lm, num_batches=11)


def test_without_tensorflow_fit_is_keras_own_inside_the_block_only(lm, no_tensorflow):
    train, _ = make_lm_datasets(embedded_corpus()[:8], lm, batch_size=4)
    lm.compile(run_eagerly=True)  # tracing a step costs ~15 s on two cores; the data is tested
    before = keras.ops.convert_to_numpy(lm.backbone.token_embedding.embeddings)
    with preprocessor_detached(lm):
        assert lm.fit.func is keras.Model.fit
        history = lm.fit(train, verbose=0)
    assert "fit" not in vars(lm) and lm.preprocessor is not None
    assert len(history.history["loss"]) == 1 and np.isfinite(history.history["loss"]).all()
    assert not np.allclose(
        keras.ops.convert_to_numpy(lm.backbone.token_embedding.embeddings), before
    )


def test_with_tensorflow_fit_stays_kerashubs(lm):
    with preprocessor_detached(lm):
        assert "fit" not in vars(lm)


def test_without_tensorflow_the_comparing_process_starts_keras_on_numpy(monkeypatch, tmp_path):
    monkeypatch.delenv("KERAS_BACKEND")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)
    with pytest.raises(ValueError, match="Unknown backend 'theano'"):
        lk.compare(preset="gpt2_tiny", weights="random", backend="theano", out=str(tmp_path))
    assert os.environ["KERAS_BACKEND"] == "numpy"
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    with pytest.raises(ValueError, match="Unknown backend 'theano'"):
        lk.compare(preset="gpt2_tiny", weights="random", backend="theano", out=str(tmp_path))
    assert os.environ["KERAS_BACKEND"] == "jax"  # what the user chose stays


@pytest.mark.large
def test_a_jax_comparison_runs_where_tensorflow_cannot_be_imported(tmp_path):
    log = tmp_path / "imports.jsonl"
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([BLOCKER, ROOT]),
        LORA_KERAS_IMPORT_LOG=str(log),
        LORA_KERAS_CACHE=str(tmp_path / "cache"),
    )
    env.pop("KERAS_BACKEND")  # as a JAX user may: Keras's default, TensorFlow, is not there
    command = [sys.executable, "-m", "lora_keras.cli", "compare", "--backend", "jax"]
    command += ["--preset", "gpt2_tiny", "--weights", "random", "--modes", "full,lora"]
    command += ["--steps", "2", "--batch-size", "2", "--sequence-length", "32", "--rank", "2"]
    command += ["--sample-prompts", "I like basketball", "--sample-length", "20"]
    out = tmp_path / "report"
    result = subprocess.run(
        [*command, "--out", str(out)], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    full, lora = results["runs"]
    for run in (full, lora):
        assert run["status"] == "ok", run.get("error")
        assert len(run["loss"]) == 2
        assert "no TensorFlow: NumPy's shuffle" in run["data_source"]
        # KerasHub generates without TensorFlow too (its preprocessor's Python path).
        [sample] = run["samples"]
        assert sample["text"].startswith("I like basketball")
    assert full["trainable_params"] == full["total_params"]
    # gpt2_tiny: 4 blocks x 2 targets x (128*2 + 2*128) at rank 2, as on TensorFlow.
    assert lora["trainable_params"] == 4 * 2 * (128 * 2 + 2 * 128)
    assert (out / "report.md").exists() and list(out.glob("*.png"))
    # One line a process: the command, the one that trains the tokenizer, and the two runs; each
    # was refused TensorFlow and holds none.
    processes = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(processes) == 4
    runs = [process for process in processes if "run_child" in process["argv"][0]]
    assert [process["keras_backend"] for process in runs] == ["jax", "jax"]
    [tokenizer] = [process for process in processes if "warm_tokenizer" in process["argv"][0]]
    [command_line] = [process for process in processes if process not in [*runs, tokenizer]]
    assert command_line["keras_backend"] == tokenizer["keras_backend"] == "numpy"
    for process in processes:
        assert "tensorflow" in process["refused"] and process["held"] == [], process


@pytest.mark.parametrize(
    "arrays, batch_size, message",
    [
        ((np.zeros((8, 2)), np.zeros(8)), 0, "batch_size must be an integer of at least 1, got 0"),
        ((np.zeros((8, 2)), np.zeros(8)), 2.5, "batch_size must be an integer of at least 1"),
        ((np.zeros((8, 2)), np.zeros(7)), 4, r"same first dimension \(rows\), got \[7, 8\]"),
    ],
)
def test_array_batches_refuse_a_bad_batch_size_or_ragged_arrays(arrays, batch_size, message):
    with pytest.raises(ValueError, match=message):
        ArrayBatches(arrays, batch_size)


def test_nested_detached_blocks_keep_the_outer_fit(lm, no_tensorflow):
    with preprocessor_detached(lm):
        outer = lm.fit
        with preprocessor_detached(lm):
            assert lm.fit.func is keras.Model.fit
        assert lm.fit is outer  # the inner block's exit left the outer's in place
    assert "fit" not in vars(lm)
