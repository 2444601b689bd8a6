"""`lk.compare`: full fine-tuning against LoRA, each in its own process, into one report.

`run_experiment` is what `compare`, `sweep` and the benchmarks share: a `RunSpec` checked,
its weights chosen, a new folder, then the runner (`lora_keras.experiments.runner`).
The orchestrating process runs no model: it asks TensorFlow, if loaded, not to
map the GPU's memory, so that a notebook calling `compare` leaves the
accelerator to the children that measure.
"""

import dataclasses
import importlib.util
import inspect
import os
import subprocess
import sys

from lora_keras.experiments.checks import check_preset_and_weights, check_weights_reachable
from lora_keras.experiments.keywords import arguments, spec_with
from lora_keras.experiments.native_precision import half_precision_warnings
from lora_keras.experiments.quiet_logs import StartupNoiseFilter, quiet_startup
from lora_keras.experiments.results_folder import check_new_folder, new_results_folder
from lora_keras.experiments.runner import run_specs, say
from lora_keras.experiments.signals import Interrupted, stop_on_signals
from lora_keras.host import describe_host
from lora_keras.models.architectures import GPT2_ARCHITECTURES, SHIPPED_PRESETS
from lora_keras.planner import plan
from lora_keras.planner.from_results import planned_as_one_adapter
from lora_keras.units import format_bytes

__all__ = ["Interrupted", "choose_weights", "compare", "run_experiment"]


def choose_weights(preset, weights):
    """`weights`, or for `None`: pretrained when the download host answers, else random."""
    from lora_keras.models import architectures, pretrained_reachable

    check_preset_and_weights(preset, weights)
    check_weights_reachable(preset, weights)
    if weights is not None:
        return weights, f"weights='{weights}' as asked"
    if preset in architectures.BUILTIN_PRESETS:
        if architectures.has_pretrained_weights(preset):
            return "pretrained", f"{preset} ships its pretrained weights in the package"
        return "random", f"{preset} has no pretrained weights"
    if os.path.isdir(preset):
        return "pretrained", "a local preset folder carries its weights"
    from lora_keras.models.preset_cache import cached_preset_folder

    if cached_preset_folder(preset):
        return "pretrained", "kagglehub's cache already holds the preset"
    if pretrained_reachable():
        return "pretrained", "the KerasHub download host answered"
    return "random", "NO NETWORK: the KerasHub download host did not answer"


def keras_off_tensorflow():
    """Without TensorFlow, Keras starts here on NumPy (unless KERAS_BACKEND says otherwise).

    Keras starts on TensorFlow unless told otherwise; this process only checks, plans and
    reports, so without TensorFlow it takes the NumPy backend, which never holds a GPU. Each
    run still trains under its own backend (set in its process). Called before a spec is
    built, whose checks may start Keras.
    """
    if importlib.util.find_spec("tensorflow") is None:
        os.environ.setdefault("KERAS_BACKEND", "numpy")


def keep_this_process_off_the_gpu():
    """Stops TensorFlow in this process from taking all GPU memory while children measure.

    TensorFlow maps every GPU's whole memory the first time it runs an op. Asking
    for memory growth first makes it take only what it uses; it cannot be asked
    once the GPU is initialized, which this warns about.
    """
    tf = sys.modules.get("tensorflow")
    if tf is None:
        return
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:
            say(
                "warning: this process already initialized the GPU and may hold its memory "
                "while the runs measure; call lk.compare before running TensorFlow ops here."
            )
            return


def warm_tokenizer_cache(preset, weights, data, text_field="text", echo=True):
    """Trains the tokenizer of a random-weights run here, once, so no measured run pays for it.

    Every run would otherwise find it cached but the first, whose time and (on a CPU,
    unresettable) peak memory would include training it. Unless KerasHub already runs in this
    process (a notebook), it is trained in a process of its own, so that this one never starts
    TensorFlow; `echo` says what of that process's output to show, as `run_isolated`'s.

    Raises:
        RuntimeError: the tokenizer could not be trained (the error of the process that tried).
    """
    if weights != "random" or os.path.isdir(preset) or preset in SHIPPED_PRESETS:
        return  # a preset folder and a shipped preset bring their own tokenizer
    if "keras_hub" in sys.modules:
        train_tokenizer(preset, data, text_field)
        return
    from lora_keras.experiments.isolated_run import error_text

    command = [sys.executable, "-m", "lora_keras.experiments.warm_tokenizer"]
    process = subprocess.Popen(
        [*command, preset, os.fspath(data), text_field],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2"),
        start_new_session=True,  # Ctrl-C reaches this process, which ends it (below)
    )
    try:
        output, _ = process.communicate()
    except BaseException:
        process.kill()
        process.wait()
        raise
    show = (lambda chunk: chunk) if echo is True else echo
    if show:
        shown = show(output) + (show.flush() if hasattr(show, "flush") else b"")
        sys.stdout.write(shown.decode("utf-8", errors="replace"))
        sys.stdout.flush()
    if process.returncode != 0:
        tail = output[-3000:].decode("utf-8", errors="replace")
        raise RuntimeError(
            "Could not train the tokenizer of the random-weights model: "
            + error_text(process.returncode, tail)
        )


def train_tokenizer(preset, data, text_field):
    """Trains (or finds cached) the local tokenizer a random-weights `preset` run on `data` uses."""
    from lora_keras.data import load_texts
    from lora_keras.models import GPT2_ARCHITECTURES
    from lora_keras.models.tokenizer import local_gpt2_tokenizer

    local_gpt2_tokenizer(
        load_texts(data, text_field=text_field), GPT2_ARCHITECTURES[preset]["vocabulary_size"]
    )


def compare(spec=None, /, *, out=None, verbose=True, **settings):
    """Trains each mode in a fresh process on the same data, seed and optimizer.

    Takes a `RunSpec`, or its settings as keywords (or both: the keywords replace the
    spec's own), and `out` and `verbose`:

    Args:
        spec: a `RunSpec`; without one, every setting not given takes its default.
        preset: a GPT-2 preset name, a local preset folder, or "gpt2_tiny".
        weights: "pretrained", "random", or None (pretrained when the download
            host answers, else random, said loudly).
        data: "embedded", "reddit_tifu", or a path (see `lk.load_texts`).
        modes: training modes among `lora_keras.experiments.train_one.MODES`.
        steps: training steps per mode (the first is reported apart).
        batch_size, sequence_length, rank, alpha, targets, learning_rate, seed: of every run.
        out: a new folder for results.json, report.md and the plots.
        mixlora: for mode "mixlora", `apply_mixlora` settings that replace
            `lora_keras.mixlora.settings.MIXLORA_DEFAULTS` (8 experts, top-2, rank 8).
        sample_prompts: prompts to generate from after training (timed).
        sample_length: the most tokens a generated sample has, prompt included.
        timeout_s: stop a run that takes longer than this.
        text_field: the field of a `.jsonl` record that holds its text.
        jit_compile, mixed_precision, frozen_dtype, remat, chunked_loss: the levers of every
            run (see `lora_keras.levers.options.Options`).
        options_sweep: also train each mode once more per lever, that lever on alone
            (mixed precision as bfloat16), so the report shows each lever's effect.
        verbose: 0 shows nothing of the runs, 1 (or True) their output without the runtimes'
            start-up notices, 2 all of it. Each run's log keeps all of it.
        backend: the Keras backend the runs train and measure under: "tensorflow", "jax" or
            "torch" (this process's own backend does not matter).
        data_parallel: train on every visible device with `lk.data_parallel()` (JAX or
            TensorFlow); `batch_size` is the global batch.

    Returns:
        The results dict also written to `out/results.json` (`spec.config()` as its config).

    Raises:
        ValueError (and FileNotFoundError, ConnectionError for data or weights that cannot be
            had): a bad argument, before any folder, process or model exists.
        Interrupted: Ctrl-C, SIGTERM or SIGHUP; results.json and report.md hold what finished.
    """
    keras_off_tensorflow()
    base = {} if spec is None else spec.to_json()
    return run_experiment(spec_with("compare", base, settings), out=out, verbose=verbose)


def signature(command, **extra):
    """`(spec=None, /, *, out=None, verbose=True, **extra, <settings>)`: what `help()` shows."""
    keyword = inspect.Parameter.KEYWORD_ONLY
    defaults = {"out": None, "verbose": True, **extra, **arguments(command)}
    return inspect.Signature(
        [inspect.Parameter("spec", inspect.Parameter.POSITIONAL_ONLY, default=None)]
        + [inspect.Parameter(name, keyword, default=value) for name, value in defaults.items()]
    )


compare.__signature__ = signature("compare")


def refuse_what_cannot_fit(spec, runs, host):
    """Asks the memory planner first: a run predicted above this CPU's memory is refused.

    Checked on a machine without a GPU, for the presets whose shape the planner knows, unless
    `spec.try_anyway`. (A GPU's usable memory is not read here: `lora-keras plan --device`.)

    Raises:
        ValueError: the planner's table of the runs that would not fit, and what would help.
    """
    if spec.try_anyway or host["gpus"] or spec.preset not in GPT2_ARCHITECTURES:
        return
    rows = []
    for run in runs:
        batch_size, rank = planned_as_one_adapter(spec.batch_size, run.rank, run.together)
        [row] = plan(
            spec.preset,
            modes=[run.mode],
            batch_size=batch_size,
            sequence_length=spec.sequence_length,
            backend=spec.backend,
            device="cpu",
            options=run.options.to_json(),
            rank=rank or spec.rank or 4,
            targets=spec.targets,
            mixlora=spec.mixlora,
        )
        if row["fits"] is False:
            levers = ", ".join(lever["change"] for lever in row.get("levers", [])) or "none"
            rows.append(
                f"  {run.name}: predicted {format_bytes(row['predicted_peak_bytes'])}, this "
                f"machine has {format_bytes(row['budget_bytes'])}; would fit with: {levers}"
            )
    if rows:
        raise ValueError(
            "The memory planner predicts that these runs will not fit this machine:\n"
            + "\n".join(rows)
            + "\nUse a lever or a smaller batch, see `lora-keras plan`, or pass --try-anyway "
            "(try_anyway=True) to run them all the same."
        )


def run_experiment(spec, runs=None, out=None, verbose=True):
    """What `compare` and `sweep` share: checks, weights, a new folder, one process a run.

    Args:
        spec: the `RunSpec` of the experiment.
        runs: its `PlannedRun`s, in order; default `spec.runs()`.
        out, verbose: as in `compare`.
    """
    keras_off_tensorflow()
    echo = {0: False, 1: StartupNoiseFilter()}.get(int(verbose), True)
    # Checked here, before any folder or process exists, not in each child after its build;
    # the folder first: that refusal needs nothing else.
    check_new_folder(out)
    runs = spec.runs() if runs is None else runs
    # KerasHub (and with it TensorFlow) starts here only to find a downloaded preset.
    with quiet_startup(enabled=int(verbose) < 2):
        spec.check_available()
        weights, why = choose_weights(spec.preset, spec.weights)
    say(f"weights: {weights} ({why})")
    host = describe_host()
    refuse_what_cannot_fit(spec, runs, host)
    warnings = half_precision_warnings(runs, host)
    for line in spec.notes() + warnings:
        say(line)
    keep_this_process_off_the_gpu()
    with stop_on_signals():
        warm_tokenizer_cache(spec.preset, weights, spec.data, spec.text_field, echo)
    out = new_results_folder(out, spec.kind)
    spec = dataclasses.replace(spec, weights=weights)
    results = run_specs(spec, runs, out, echo=echo, warnings=warnings)
    results["folder"] = out
    return results
