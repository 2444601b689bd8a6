"""Makes this Python process, and every process it starts, run as if TensorFlow were not installed.

Put this folder first on `PYTHONPATH`: Python imports `sitecustomize` at start-up, and child
processes inherit `PYTHONPATH`, so a comparison's runs are blocked too. Every module whose name
starts with "tensorflow" (tensorflow, tensorflow_text, tensorflow_datasets...) is then not found,
as on a machine without them: `import tensorflow` raises `ModuleNotFoundError` and
`importlib.util.find_spec("tensorflow")` is `None`. When `LORA_KERAS_IMPORT_LOG` names a file,
each process appends one JSON line to it at exit: its pid, its arguments, its KERAS_BACKEND, the
modules it was refused and the TensorFlow modules it holds (none, unless something got round the
block).
"""

import atexit
import json
import os
import sys

_BLOCKED_PREFIX = "tensorflow"
_refused = set()


def _blocked(name):
    return name.split(".")[0].startswith(_BLOCKED_PREFIX)


class _WithoutTensorFlow:
    """Wraps a `sys.meta_path` finder so that it finds no TensorFlow module."""

    def __init__(self, finder):
        self._finder = finder

    def find_spec(self, name, path=None, target=None):
        if _blocked(name):
            _refused.add(name)
            return None
        return self._finder.find_spec(name, path, target)

    def __getattr__(self, attribute):  # invalidate_caches, find_distributions, ...
        return getattr(self._finder, attribute)


def _log():
    record = {
        "pid": os.getpid(),
        "argv": sys.argv,
        "keras_backend": os.environ.get("KERAS_BACKEND"),
        "refused": sorted(_refused),
        "held": sorted(name for name in sys.modules if _blocked(name)),
    }
    with open(os.environ["LORA_KERAS_IMPORT_LOG"], "a") as file:
        file.write(json.dumps(record) + "\n")


sys.meta_path[:] = [_WithoutTensorFlow(finder) for finder in sys.meta_path]
if os.environ.get("LORA_KERAS_IMPORT_LOG"):
    atexit.register(_log)
