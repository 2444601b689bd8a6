"""The set-up every notebook shares: one call after its parameters cell.

A notebook's parameters cell sets PRESET, WEIGHTS, NUM_BATCHES and BATCH_SIZE (and DATA where it
has data), leaving `None` for "choose for this runtime". `start_notebook` fills those in, prints
each value and why, and says what runs here, so a notebook keeps its cells for its story.
"""

import dataclasses
import os
import sys

REQUIRED = ("PRESET", "WEIGHTS", "NUM_BATCHES", "BATCH_SIZE")
# What `None` becomes on each runtime, unless a notebook says otherwise: the keras.io tutorial's
# settings on a GPU; on a CPU, batches few and small enough to finish in minutes.
RUNTIME_DEFAULTS = {
    "gpu": {"NUM_BATCHES": 500, "BATCH_SIZE": 32},
    "cpu": {"NUM_BATCHES": 10, "BATCH_SIZE": 4},
}


@dataclasses.dataclass(frozen=True)
class NotebookRuntime:
    """What runs a notebook: the Keras backend, the device's name, and where it runs."""

    backend: str
    device: str
    on_gpu: bool
    on_colab: bool


def start_notebook(settings, *, gpu=None, cpu=None, trains_here=False):
    """Fills in the settings left `None`, keeps the GPU for the measured runs, says what runs.

    In order: the backend is `KERAS_BACKEND` where set, else TensorFlow; `PRESET` becomes
    "gpt2_base_en"; `WEIGHTS` follows `lk.choose_weights` (pretrained where they can be had, else
    random); `DATA` becomes "reddit_tifu" on Colab when its download host answers, else
    "embedded"; every other name of `gpu` or `cpu` takes its value for this runtime. Each
    setting is printed with its value and why. `NUM_BATCHES` is lowered to what the embedded
    corpus holds when it holds fewer batches.

    Args:
        settings: the notebook's namespace, `globals()` (any dict works): the settings are read
            from it and the chosen values written back into it, as papermill writes parameters.
        gpu: dict, this notebook's choices on a GPU, by setting name, over `RUNTIME_DEFAULTS`.
        cpu: dict, the same on a CPU; `gpu` and `cpu` must name the same settings.
        trains_here: False (the default) when the notebook's measured runs train in processes
            of their own (`lk.compare`, `lk.sweep`): TensorFlow in this process is then kept off
            the GPU, as it would otherwise reserve most of its memory at its first operation.
            True when the notebook trains in its own process: the GPU stays visible.

    Returns:
        A `NotebookRuntime`: the backend, the device's name (as `lk.describe_environment()`
        gives it), whether that is a GPU, and whether this is Colab.

    Example:
    ```python
    PRESET, WEIGHTS, NUM_BATCHES, BATCH_SIZE = "gpt2_tiny", None, None, None  # parameters
    RUNTIME = start_notebook(globals(), gpu={"NUM_BATCHES": 50})  # prints each setting and why
    # NUM_BATCHES is now 50 on a GPU, 10 on a CPU; RUNTIME.device names the device
    ```
    """
    missing = [name for name in REQUIRED if name not in settings]
    if missing:
        raise ValueError(
            f"The parameters cell sets no {', '.join(missing)}: every notebook's parameters cell "
            f"sets {', '.join(REQUIRED)} (None: chosen for this runtime)."
        )
    choices = _runtime_choices(settings, gpu or {}, cpu or {})
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")  # read once, when Keras is imported
    runtime = _say_what_runs_here(trains_here)

    import lora_keras as lk

    kind = "gpu" if runtime.on_gpu else "cpu"
    names = [*REQUIRED, *(["DATA"] if "DATA" in settings else []), *choices[kind]]
    chosen = {name: settings[name] for name in names}  # written back once all is checked
    setting = notebook_setting
    chosen["PRESET"] = setting("PRESET", chosen["PRESET"], "gpt2_base_en", "the tutorial's model")
    chosen["WEIGHTS"], why = lk.choose_weights(chosen["PRESET"], chosen["WEIGHTS"])
    print(f"{'WEIGHTS':<21} = {chosen['WEIGHTS']!r:<16} ({why})")
    if "DATA" in chosen:
        chosen["DATA"] = setting("DATA", chosen["DATA"], *_data_choice(runtime.on_colab))
    for name, value in choices[kind].items():
        chosen[name] = setting(name, chosen[name], value, f"{kind.upper()} runtime")
    chosen["NUM_BATCHES"] = _checked_num_batches(
        chosen["NUM_BATCHES"], chosen["BATCH_SIZE"], chosen.get("DATA", "embedded")
    )
    settings.update(chosen)
    if not runtime.on_gpu:
        print("\nNo GPU: smaller settings than the tutorial's, so this runs in minutes on a CPU.")
    return runtime


def notebook_setting(name, value, default, why):
    """`value`, or `default` when it is None; prints which, and why.

    A notebook's parameters cell leaves a setting `None` to mean "choose for this runtime".

    Example:
    ```python
    BATCH_SIZE = lk.notebook_setting("BATCH_SIZE", None, 4, "CPU runtime")  # prints, returns 4
    ```
    """
    reason = why if value is None else "set in the parameters cell"
    value = default if value is None else value
    print(f"{name:<21} = {value!r:<16} ({reason})")
    return value


def _runtime_choices(settings, gpu, cpu):
    """`RUNTIME_DEFAULTS` with the notebook's own choices over them, checked against `settings`."""
    choices = {
        "gpu": {**RUNTIME_DEFAULTS["gpu"], **gpu},
        "cpu": {**RUNTIME_DEFAULTS["cpu"], **cpu},
    }
    if choices["gpu"].keys() != choices["cpu"].keys():
        only = sorted(choices["gpu"].keys() ^ choices["cpu"].keys())
        raise ValueError(
            f"{', '.join(only)}: chosen for one runtime only. Give gpu= and cpu= the same "
            "settings, so that None is filled in on either."
        )
    unknown = [name for name in choices["gpu"] if name not in settings]
    if unknown:
        raise ValueError(
            f"gpu= and cpu= choose {', '.join(unknown)}, which the parameters cell does not set: "
            "add it there (None: chosen for this runtime), or leave it out of gpu= and cpu=."
        )
    return choices


def _say_what_runs_here(trains_here):
    """Prints the versions, backend and device; hides the GPU from TensorFlow unless it trains."""
    import keras
    import tensorflow as tf

    import lora_keras as lk

    device = lk.describe_environment()["device"]  # read before the GPU is hidden
    on_colab = "google.colab" in sys.modules
    if not trains_here and tf.config.list_physical_devices("GPU"):
        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError:  # TensorFlow already ran here (a cell run twice)
            print(
                "TensorFlow already holds the GPU here: restart the runtime if runs run out of "
                "memory."
            )
    backend = keras.config.backend()
    print(f"lora_keras {lk.__version__}, Keras {keras.__version__}, backend: {backend}")
    print(f"device: {device}" + (" on Colab" if on_colab else ""))
    return NotebookRuntime(backend, device, not device.startswith("CPU"), on_colab)


def _data_choice(on_colab):
    """DATA's default and why: the tutorial's data on Colab when online, else the package's."""
    import lora_keras as lk

    if not on_colab:
        return "embedded", "off Colab: the corpus in the package, no download"
    if lk.pretrained_reachable():  # one connection with a short timeout, never a hang
        return "reddit_tifu", "the tutorial's data, on Colab and online"
    return "embedded", "offline: the corpus in the package, no download"


def _checked_num_batches(num_batches, batch_size, data):
    """At least 2 batches, and no more than the embedded corpus holds (then lowered, and said)."""
    import lora_keras as lk

    why = "at least 2 are needed, as the first step (tracing) is timed apart from the others."
    if num_batches < 2:
        raise ValueError(f"NUM_BATCHES={num_batches}: {why}")
    if data == "embedded":
        documents = len(lk.embedded_corpus())
        if documents // batch_size < 2:
            raise ValueError(
                f"BATCH_SIZE={batch_size}: the embedded corpus's {documents} documents make fewer "
                f"than 2 batches; {why} Lower BATCH_SIZE."
            )
        if documents < num_batches * batch_size:
            num_batches = documents // batch_size
            print(
                f"NUM_BATCHES lowered to {num_batches}: all the batches the embedded corpus holds."
            )
    return num_batches
