"""`load_texts`: documents as a `tf.data.Dataset` of strings (a list without TensorFlow)."""

import json
import re
from pathlib import Path

from lora_keras.data.embedded_corpus import embedded_corpus
from lora_keras.data.optional_tensorflow import check_tfds_installed, optional_tensorflow
from lora_keras.network import host_reachable

FILE_SUFFIXES = (".txt", ".jsonl")
# Where TFDS downloads reddit_tifu from (its builder's `_URL`).
REDDIT_TIFU_HOST = ("drive.google.com", 443)
# A blank line, possibly holding spaces, separates documents in a .txt file.
_BLANK_LINE = re.compile(r"\n[ \t\r]*\n")


def _read_text(path):
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"Cannot read {path}: it is not UTF-8 text ({error.reason} at byte {error.start}). "
            "Give a .txt or .jsonl file of text."
        ) from error


def _read_txt(path):
    documents = (part.strip() for part in _BLANK_LINE.split(_read_text(path)))
    return [document for document in documents if document]


def _read_jsonl(path, text_field):
    documents = []
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}, line {number}: not valid JSON ({error.msg}).") from error
        if not isinstance(record, dict):
            raise ValueError(
                f"{path}, line {number}: a JSON {type(record).__name__}, not an object; each "
                f"line of a .jsonl file is one object with a {text_field!r} field."
            )
        if text_field not in record:
            raise ValueError(
                f"{path}, line {number}: no {text_field!r} field; its fields are "
                f"{sorted(record)}. Name the text's field with text_field=... (on the command "
                "line: --text-field)."
            )
        text = record[text_field]
        if not isinstance(text, str):
            raise ValueError(
                f"{path}, line {number}: {text_field!r} holds a {type(text).__name__}, not text."
            )
        if text.strip():
            documents.append(text.strip())
    return documents


def _read_file(path, text_field):
    if path.suffix not in FILE_SUFFIXES:
        raise ValueError(
            f"Cannot read {path}: texts come from .txt files (documents separated by blank lines) "
            "or .jsonl files (one JSON object a line)."
        )
    documents = _read_txt(path) if path.suffix == ".txt" else _read_jsonl(path, text_field)
    if not documents:
        raise ValueError(f"{path} holds no text.")
    return documents


def _read_folder(folder, text_field):
    files = sorted(path for path in folder.rglob("*") if path.suffix in FILE_SUFFIXES)
    if not files:
        raise ValueError(f"The folder {folder} holds no .txt or .jsonl file.")
    return [document for path in files for document in _read_file(path, text_field)]


# "embedded:recipe": one family of the embedded corpus, enough of it for hundreds of steps.
FAMILY_PREFIX = "embedded:"
FAMILY_DOCUMENTS = 1000


def load_texts(source, split="train", text_field="text"):
    """Documents as a `tf.data.Dataset` of scalar `tf.string`; a list of `str` without TensorFlow.

    Where TensorFlow cannot be imported (a JAX or torch install), "embedded" and paths give
    their documents as a list of strings, which `make_lm_datasets` and `load_gpt2` take as well;
    "reddit_tifu" raises `ImportError`.

    Args:
        source: one of
            - "embedded": the corpus shipped in this package (`embedded_corpus()`); no network.
            - "embedded:FAMILY": one family of it ("embedded:recipe"), its first
              `FAMILY_DOCUMENTS` documents (as `lk.corpus_split` counts them); no network.
            - "reddit_tifu": TFDS's `reddit_tifu` documents, as the KerasHub LoRA tutorial
              loads them (downloads on first use).
            - a path: a `.txt` file (documents separated by blank lines), a `.jsonl` file with
              one JSON object a line, or a folder holding such files (read in name order,
              sub-folders included).
        split: a TFDS split such as "train" or "train[:95%]". `reddit_tifu` has only "train";
            local texts have only "train", and `make_lm_datasets` holds out validation data.
        text_field: the field of a `.jsonl` record that holds its text.

    Example:
    ```python
    texts = lk.load_texts("embedded")
    print(next(iter(texts)).numpy()[:60])
    ```
    """
    if source == "reddit_tifu":
        return _load_reddit_tifu(split)
    if split != "train":
        raise ValueError(
            f"split={split!r} applies to TFDS sources; {source!r} has a single 'train' split. "
            "Hold out validation data with make_lm_datasets(..., validation_batches=...)."
        )
    documents = read_documents(source, text_field)
    tf = optional_tensorflow()
    if tf is None:
        return documents
    return tf.data.Dataset.from_tensor_slices(tf.constant(documents, dtype=tf.string))


def read_documents(source, text_field="text"):
    """The documents of "embedded" or a path, as a list of strings; no TensorFlow needed.

    `lk.compare` reads them before any run starts, so that a bad file is refused at once.
    """
    if source == "embedded":
        return embedded_corpus()
    if str(source).startswith(FAMILY_PREFIX):
        family = str(source)[len(FAMILY_PREFIX) :]
        return embedded_corpus(families=(family,), per_family=FAMILY_DOCUMENTS)
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(
            f"No such file or folder: {str(path)!r}. A source is 'embedded', "
            "'reddit_tifu', or a path to a .txt or .jsonl file or a folder of them."
        )
    return _read_folder(path, text_field) if path.is_dir() else _read_file(path, text_field)


def check_reddit_tifu_available():
    """Raises at once when reddit_tifu cannot be loaded here.

    `ImportError` without TensorFlow or TFDS; `ConnectionError` when the documents are neither
    downloaded nor downloadable.
    """
    check_tfds_installed()
    # The host first: asking TFDS whether it is prepared imports TensorFlow (seconds).
    if host_reachable(REDDIT_TIFU_HOST):
        return
    import tensorflow_datasets as tfds

    # Offline, TFDS retries its download for minutes; a prepared copy needs no network.
    if not tfds.builder("reddit_tifu").is_prepared():
        raise ConnectionError(
            "Could not load TFDS reddit_tifu: it is not downloaded yet and "
            f"{REDDIT_TIFU_HOST[0]} does not answer. With no network, use "
            "load_texts('embedded') (--data embedded) or a local .txt/.jsonl file."
        )


def _load_reddit_tifu(split):
    check_reddit_tifu_available()
    import tensorflow_datasets as tfds

    try:
        reddit = tfds.load("reddit_tifu", split=split, as_supervised=True)
    except Exception as error:
        # TFDS fails in many ways offline (DNS, HTTP, a half-written download); all of
        # them mean the same thing to a user, and the cause stays chained below.
        raise RuntimeError(
            f"Could not load TFDS reddit_tifu ({type(error).__name__}: {error}). It "
            "downloads on first use; with no network, use load_texts('embedded') or a "
            "local .txt/.jsonl file."
        ) from error
    # `as_supervised` gives (document, title); the tutorial trains on the documents.
    return reddit.map(lambda document, _: document)
