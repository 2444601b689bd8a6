"""`lk.compare`: full fine-tuning against LoRA, each in its own process, into one report.

The orchestrating process runs no model: it asks TensorFlow, if loaded, not to
map the GPU's memory, so that a notebook calling `compare` leaves the
accelerator to the children that measure.
"""

import contextlib
import datetime
import importlib.util
import os
import secrets
import signal
import sys
import threading
import time

from lora_keras.experiments.check_arguments import check_arguments, check_preset_and_weights
from lora_keras.experiments.isolated_run import run_isolated
from lora_keras.experiments.quiet_logs import StartupNoiseFilter
from lora_keras.io_utils import atomic_write_json
from lora_keras.levers.options import (
    OPTIONS,
    check_mode_options,
    check_options,
    options_sweep_runs,
)
from lora_keras.mixlora.settings import MIXLORA_DEFAULTS

DEFAULT_RESULTS_ROOT = "lora-keras-results"


def _say(message):
    print(message, flush=True)


def choose_weights(preset, weights):
    """`weights`, or for `None`: pretrained when the download host answers, else random."""
    from lora_keras.models import architectures, pretrained_reachable
    from lora_keras.models.preset_cache import cached_preset_folder

    check_preset_and_weights(preset, weights)
    if weights is not None:
        return weights, f"weights='{weights}' as asked"
    if preset in architectures.BUILTIN_PRESETS:
        return "random", f"{preset} has no pretrained weights"
    if os.path.isdir(preset):
        return "pretrained", "a local preset folder carries its weights"
    if cached_preset_folder(preset):
        return "pretrained", "kagglehub's cache already holds the preset"
    if pretrained_reachable():
        return "pretrained", "the KerasHub download host answered"
    return "random", "NO NETWORK: the KerasHub download host did not answer"


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
            _say(
                "warning: this process already initialized the GPU and may hold its memory "
                "while the runs measure; call lk.compare before running TensorFlow ops here."
            )
            return


def warm_tokenizer_cache(preset, weights, data, text_field="text"):
    """Trains the tokenizer of a random-weights run here, once, so no measured run pays for it.

    Every run would otherwise find it cached but the first, whose time and (on a CPU,
    unresettable) peak memory would include training it.
    """
    if weights != "random" or os.path.isdir(preset):
        return
    from lora_keras.data import load_texts
    from lora_keras.models import GPT2_ARCHITECTURES
    from lora_keras.models.tokenizer import local_gpt2_tokenizer

    local_gpt2_tokenizer(
        load_texts(data, text_field=text_field), GPT2_ARCHITECTURES[preset]["vocabulary_size"]
    )


def new_results_folder(out, kind):
    """Creates a new folder, exclusively: one that exists (even empty) is never reused.

    The default name adds this process's id and a random suffix to the time, so that two
    comparisons started in the same second (two terminals, a notebook, a workshop's shared
    folder) never share a folder or a run's files.
    """
    for _ in range(100):
        if out is None:
            stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
            name = f"{kind}-{stamp}-{os.getpid()}-{secrets.token_hex(2)}"
            folder = os.path.join(DEFAULT_RESULTS_ROOT, name)
        else:
            folder = os.fspath(out)
        try:
            os.makedirs(os.path.dirname(os.path.abspath(folder)), exist_ok=True)
            os.mkdir(folder)  # exclusive: fails if the folder exists, whoever made it
            return folder
        except FileExistsError as error:
            if out is not None and os.path.isdir(folder):
                raise FileExistsError(
                    f"'{folder}' already exists. Choose a new --out folder (out=...); "
                    "lora-keras never writes into an existing folder, so a report holds only "
                    "its own runs."
                ) from error
            if out is not None:
                raise _unwritable(folder, error) from error
        except OSError as error:
            raise _unwritable(folder, error) from error
    raise FileExistsError(f"Could not find a free folder name under {DEFAULT_RESULTS_ROOT}.")


def _unwritable(folder, error):
    return ValueError(
        f"Cannot create the results folder '{folder}': {error.strerror}. Choose a writable "
        "place with --out (out=...)."
    )


class Interrupted(KeyboardInterrupt):
    """A comparison stopped by Ctrl-C, SIGTERM or SIGHUP, after saving what had finished.

    Attributes:
        signal_name: "SIGINT", "SIGTERM" or "SIGHUP".
        folder: where results.json and report.md were written.
    """

    def __init__(self, signal_name, folder=None):
        super().__init__(signal_name)
        self.signal_name = signal_name
        self.folder = folder


_STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")


@contextlib.contextmanager
def stop_on_signals():
    """Turns Ctrl-C, SIGTERM and SIGHUP into `Interrupted` for a block, in the main thread.

    Elsewhere (a worker thread) signals cannot be caught and Ctrl-C stays a KeyboardInterrupt.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise Interrupted(signal.Signals(signum).name)

    numbers = [getattr(signal, name) for name in _STOP_SIGNALS if hasattr(signal, name)]
    previous = {number: signal.signal(number, stop) for number in numbers}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _placeholder(spec, status):
    return {
        "name": spec["name"],
        "mode": spec["mode"],
        "rank": spec.get("rank"),
        "options": spec.get("options"),  # labels the runs of an options sweep apart
        "status": status,
    }


def run_specs(specs, config, out, echo=True, timeout_s=None):
    """Runs each spec in its own process, saving results.json before and after every run.

    A run that fails is recorded with its status and error and the others go on. Every
    planned run is listed from the start ("not started", then "running"), so a comparison
    that dies says which runs it lacks; Ctrl-C, SIGTERM and SIGHUP stop the running child,
    mark it "interrupted", write the report of what finished and raise `Interrupted`.
    """
    from lora_keras.report import write_report

    results = {"schema_version": 1, "created": _now(), "environment": {}, "config": config}
    results["runs"] = [_placeholder(spec, "not started") for spec in specs]
    results_path = os.path.join(out, "results.json")
    os.makedirs(os.path.join(out, "runs"), exist_ok=True)
    atomic_write_json(results_path, results)
    try:
        with stop_on_signals():
            for index, spec in enumerate(specs):
                _run_one(results, index, spec, out, echo, timeout_s)
                atomic_write_json(results_path, results)
    except KeyboardInterrupt as error:
        signal_name = getattr(error, "signal_name", "SIGINT")
        results["interrupted"] = {"signal": signal_name, "at": _now()}
        atomic_write_json(results_path, results)
        # Written before anything is printed: after SIGHUP the terminal may be gone.
        write_report(out)
        _say(f"\ninterrupted by {signal_name}: {out}/report.md holds the runs that finished")
        raise Interrupted(signal_name, out) from error
    write_report(out)
    return results


def _run_one(results, index, spec, out, echo, timeout_s):
    count = len(results["runs"])
    _say(
        f"\n[{index + 1}/{count}] {spec['name']}: {spec['steps']} steps, "
        f"batch {spec['batch_size']} x {spec['sequence_length']} tokens"
    )
    results["runs"][index] = _placeholder(spec, "running")
    atomic_write_json(os.path.join(out, "results.json"), results)
    start = time.perf_counter()
    try:
        record = run_isolated(spec, os.path.join(out, "runs"), echo=echo, timeout_s=timeout_s)
    except KeyboardInterrupt as error:
        signal_name = getattr(error, "signal_name", "SIGINT")
        results["runs"][index] = dict(
            _placeholder(spec, "interrupted"),
            error=f"stopped by {signal_name} after {time.perf_counter() - start:.1f} s",
            log=f"{spec['name']}.log",
        )
        raise
    record.setdefault("name", spec["name"])
    if record["status"] == "ok" and not results["environment"]:
        results["environment"] = _environment(record)
    results["runs"][index] = record
    _say(
        f"[{index + 1}/{count}] {spec['name']}: {record['status']}"
        + (f" ({record['error']})" if record.get("error") else "")
    )


def _now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _environment(record):
    provenance = record.get("provenance", {})
    if provenance.get("weights") == "random":
        weights = f"random weights, {provenance.get('preset')} architecture (no download)"
    else:
        weights = f"pretrained weights of {provenance.get('preset')} ({provenance.get('source')})"
    return {
        **record.get("environment", {}),
        "weights_source": weights,
        "tokenizer_source": provenance.get("tokenizer"),
        "data_source": record.get("data_source"),
    }


def compare(
    preset="gpt2_base_en",
    weights=None,
    data="embedded",
    modes=("full", "lora"),
    steps=10,
    batch_size=4,
    sequence_length=128,
    rank=4,
    alpha=32.0,
    targets=("query", "value"),
    learning_rate=5e-5,
    seed=0,
    out=None,
    mixlora=None,
    sample_prompts=(),
    sample_length=64,
    timeout_s=None,
    verbose=True,
    text_field="text",
    jit_compile=False,
    mixed_precision=None,
    frozen_dtype=None,
    remat=False,
    chunked_loss=False,
    options_sweep=False,
    backend="tensorflow",
    data_parallel=False,
):
    """Trains each mode in a fresh process on the same data, seed and optimizer.

    Args:
        preset: a GPT-2 preset name, a local preset folder, or "gpt2_tiny".
        weights: "pretrained", "random", or None (pretrained when the download
            host answers, else random, said loudly).
        data: "embedded", "reddit_tifu", or a path (see `lk.load_texts`).
        modes: training modes among `lora_keras.experiments.train_one.MODES`.
        steps: training steps per mode (the first is reported apart).
        out: a new folder for results.json, report.md and the plots.
        mixlora: for mode "mixlora", `apply_mixlora` settings that replace
            `lora_keras.mixlora.settings.MIXLORA_DEFAULTS` (8 experts, top-2, rank 8).
        sample_prompts: prompts to generate from after training (timed).
        sample_length: the most tokens a generated sample has, prompt included.
        timeout_s: stop a run that takes longer than this.
        text_field: the field of a `.jsonl` record that holds its text.
        jit_compile, mixed_precision, frozen_dtype, remat, chunked_loss: the levers of every
            run (see `lora_keras.levers.options.OPTIONS`).
        options_sweep: also train each mode once more per lever, that lever on alone
            (mixed precision as bfloat16), so the report shows each lever's effect.
        verbose: 0 shows nothing of the runs, 1 (or True) their output without the runtimes'
            start-up notices, 2 all of it. Each run's log keeps all of it.
        backend: the Keras backend the runs train and measure under: "tensorflow", "jax" or
            "torch" (this process's own backend does not matter).
        data_parallel: train on every visible device with `lk.data_parallel()` (JAX or
            TensorFlow); `batch_size` is the global batch.

    Returns:
        The results dict also written to `out/results.json`.

    Raises:
        ValueError (and FileNotFoundError, ConnectionError for data or weights that cannot be
            had): a bad argument, before any folder, process or model exists.
        Interrupted: Ctrl-C, SIGTERM or SIGHUP; results.json and report.md hold what finished.
    """
    if "mixlora" in modes:  # results.json records the settings used, defaults included
        mixlora = {**MIXLORA_DEFAULTS, **(mixlora or {})}
    config = dict(locals(), kind="compare", modes=list(modes), targets=list(targets), ranks=None)
    # Only the LoRA family has a rank; a full run (failed or not) is labelled without one,
    # a MixLoRA run with its experts' rank, as its record will be.
    own_rank = {"full": None, "mixlora": (mixlora or {}).get("rank")}
    runs = [(mode, mode, own_rank.get(mode, rank)) for mode in modes]
    if options_sweep:
        runs = [run for name, mode, rank in runs for run in options_sweep_runs(mode, rank)]
    return run_experiment(config, runs, list(sample_prompts), timeout_s, verbose)


# Settings that describe the experiment in results.json; the others only steer this process.
# options_sweep is checked, then said by the runs' own options.
_NOT_CONFIG = ("out", "sample_prompts", "timeout_s", "verbose", "options_sweep")


def run_experiment(config, runs, sample_prompts, timeout_s, verbose):
    """What `compare` and `sweep` share: checks, weights, a new folder, one process a run.

    Args:
        config: the experiment's settings (those of `compare`, `kind` included).
        runs: `(name, mode, rank)` for each run, in order, or `(name, mode, rank, options)`
            where a run's options differ from the experiment's.
        sample_prompts, timeout_s, verbose: as in `compare`.
    """
    if importlib.util.find_spec("tensorflow") is None:
        # Keras starts on TensorFlow unless told otherwise; this process only checks, plans and
        # reports, so without TensorFlow it takes the NumPy backend, which never holds a GPU.
        # Each run still trains under its own backend (set in its process).
        os.environ.setdefault("KERAS_BACKEND", "numpy")
    # Checked here, before any folder or process exists, not in each child after its build.
    check_arguments(config)
    options = check_options(**{name: config.get(name, OPTIONS[name][0]) for name in OPTIONS})
    run_options = [
        check_mode_options(mode, check_options(**dict(options, **(own[0] if own else {}))))
        for _, mode, _, *own in runs
    ]
    weights, why = choose_weights(config["preset"], config["weights"])
    _say(f"weights: {weights} ({why})")
    out = new_results_folder(config["out"], config["kind"])
    keep_this_process_off_the_gpu()
    try:
        with stop_on_signals():
            warm_tokenizer_cache(config["preset"], weights, config["data"], config["text_field"])
    except BaseException:
        os.rmdir(out)  # still empty: a failed start leaves no folder behind
        raise
    config = {key: value for key, value in config.items() if key not in _NOT_CONFIG}
    config["weights"] = weights
    specs = [
        dict(
            config,
            name=name,
            mode=mode,
            rank=rank,
            options=own_options,
            sample_prompts=sample_prompts,
            verbose=1,
        )
        for (name, mode, rank, *_), own_options in zip(runs, run_options, strict=True)
    ]
    echo = {0: False, 1: StartupNoiseFilter()}.get(int(verbose), True)
    results = run_specs(specs, config, out, echo=echo, timeout_s=timeout_s)
    results["folder"] = out
    return results
