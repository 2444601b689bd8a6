"""The Keras backends a comparison can measure under, checked before any process starts."""

import importlib.util

# Keras backend name -> the module that must be importable for it.
BACKENDS = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


def check_backend(backend):
    """Raises `ValueError` unless `backend` is a Keras backend installed here.

    Example:
    ```python
    check_backend("jax")  # fine when jax is installed
    ```
    """
    if backend not in BACKENDS:
        raise ValueError(f"Unknown backend {backend!r}. Choose one of: {', '.join(BACKENDS)}.")
    if importlib.util.find_spec(BACKENDS[backend]) is None:
        raise ValueError(
            f"The {backend} backend is not installed in this Python ({BACKENDS[backend]} cannot "
            f"be imported). Install it (`pip install {BACKENDS[backend]}`) or choose another "
            "backend."
        )
