"""Package attributes imported on first use (PEP 562).

`import lora_keras`, `lora-keras --help` and `--version` then answer without starting
TensorFlow, which takes seconds: a name's module is imported when the name is first used.
"""

import importlib
import importlib.util


def lazy_attributes(namespace, exports):
    """The `__getattr__` and `__dir__` of a package whose `exports` maps a name to its module.

    Args:
        namespace: the package's `globals()`.
        exports: `{name: "package.module"}`, the module each public name comes from.

    Example:

    ```python
    __getattr__, __dir__ = lazy_attributes(globals(), {"load_gpt2": "lora_keras.models.load_gpt2"})
    ```
    """
    package = namespace["__name__"]

    def __getattr__(name):
        if name in exports:
            value = getattr(importlib.import_module(exports[name]), name)
        elif importlib.util.find_spec(f"{package}.{name}") is not None:
            value = importlib.import_module(f"{package}.{name}")
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        # Bound after the import, which binds a submodule of the same name (`load_gpt2.py`)
        # here; the next access is then an ordinary attribute.
        namespace[name] = value
        return value

    def __dir__():
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
