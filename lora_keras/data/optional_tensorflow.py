"""TensorFlow where it is installed; JAX and torch users need none for the embedded corpus or files.

KerasHub's GPT-2 tokenizer and preprocessor run in plain Python (backed by the `tokenizers`
library) when TensorFlow is absent, so only `tf.data` and TFDS tie the data path to TensorFlow:
`load_texts` and `make_lm_datasets` use them where TensorFlow imports, and lists of strings and
NumPy batches where it does not.
"""

import importlib.util

# What TFDS reddit_tifu needs, by module name and by the name pip installs it under.
TFDS_PACKAGES = {"tensorflow": "tensorflow", "tensorflow_datasets": "tensorflow-datasets"}


def optional_tensorflow():
    """The `tensorflow` module, or `None` where it cannot be imported."""
    try:
        import tensorflow as tf
    except ImportError:
        return None
    return tf


def check_tfds_installed():
    """Raises `ImportError` unless TFDS can load here, without importing it (that takes seconds)."""
    missing = [name for name in TFDS_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(
            f"TFDS reddit_tifu needs {' and '.join(missing)}, not installed in this Python. "
            f"Install {'them' if len(missing) > 1 else 'it'} "
            f"(`pip install {' '.join(TFDS_PACKAGES[name] for name in missing)}`), or use the "
            "embedded corpus (load_texts('embedded'), --data embedded) or a local .txt/.jsonl "
            "file, which need no TensorFlow."
        )
