"""`lk.compare`: full fine-tuning against LoRA, each in its own process, into one report.

The orchestrating process runs no model: it asks TensorFlow, if loaded, not to
map the GPU's memory, so that a notebook calling `compare` leaves the
accelerator to the children that measure.
"""

import datetime
import os
import sys

from lora_keras.backends import check_backend
from lora_keras.experiments.isolated_run import run_isolated
from lora_keras.experiments.quiet_logs import StartupNoiseFilter
from lora_keras.experiments.train_one import MODES
from lora_keras.gpt2_surgery import check_targets
from lora_keras.io_utils import atomic_write_json

DEFAULT_RESULTS_ROOT = "lora-keras-results"


def _say(message):
    print(message, flush=True)


def choose_weights(preset, weights):
    """`weights`, or for `None`: pretrained when the download host answers, else random."""
    from lora_keras.models import KNOWN_PRESETS, architectures, pretrained_reachable
    from lora_keras.models.preset_cache import cached_preset_folder

    if not (os.path.isdir(preset) or preset in KNOWN_PRESETS):
        raise ValueError(
            f"Unknown preset {preset!r}. Known presets: {', '.join(KNOWN_PRESETS)}; or give the "
            "path of a folder written by `save_to_preset`."
        )
    if weights is not None:
        if weights not in ("pretrained", "random"):
            raise ValueError(f"weights must be 'pretrained' or 'random', got '{weights}'.")
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


def warm_tokenizer_cache(preset, weights, data):
    """Trains the tokenizer of a random-weights run here, once, so no measured run pays for it.

    Every run would otherwise find it cached but the first, whose time and (on a CPU,
    unresettable) peak memory would include training it.
    """
    if weights != "random" or os.path.isdir(preset):
        return
    from lora_keras.data import load_texts
    from lora_keras.models import GPT2_ARCHITECTURES
    from lora_keras.models.tokenizer import local_gpt2_tokenizer

    local_gpt2_tokenizer(load_texts(data), GPT2_ARCHITECTURES[preset]["vocabulary_size"])


def new_results_folder(out, kind):
    """Creates a fresh folder; an existing non-empty one is refused, never overwritten."""
    if out is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = os.path.join(DEFAULT_RESULTS_ROOT, f"{kind}-{stamp}")
    if os.path.isdir(out) and os.listdir(out):
        raise FileExistsError(
            f"'{out}' already holds files (an earlier report?). Choose a new --out folder; "
            "lora-keras never overwrites a report."
        )
    os.makedirs(out, exist_ok=True)
    return out


def run_specs(specs, config, out, echo=True, timeout_s=None):
    """Runs each spec in its own process, saving results.json after every run.

    A run that fails is recorded with its status and error and the others go
    on; an interrupted comparison keeps every run that finished.
    """
    from lora_keras.report import write_report

    results = {"schema_version": 1, "created": _now(), "environment": {}, "config": config}
    results["runs"] = []
    results_path = os.path.join(out, "results.json")
    for index, spec in enumerate(specs, start=1):
        _say(
            f"\n[{index}/{len(specs)}] {spec['name']}: {spec['steps']} steps, "
            f"batch {spec['batch_size']} x {spec['sequence_length']} tokens"
        )
        record = run_isolated(spec, os.path.join(out, "runs"), echo=echo, timeout_s=timeout_s)
        record.setdefault("name", spec["name"])
        if record["status"] == "ok" and not results["environment"]:
            results["environment"] = _environment(record)
        results["runs"].append(record)
        atomic_write_json(results_path, results)
        _say(
            f"[{index}/{len(specs)}] {spec['name']}: {record['status']}"
            + (f" ({record['error']})" if record.get("error") else "")
        )
    write_report(out)
    return results


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
    sample_prompts=(),
    sample_length=64,
    timeout_s=None,
    verbose=True,
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
        sample_prompts: prompts to generate from after training (timed).
        sample_length: the most tokens a generated sample has, prompt included.
        timeout_s: stop a run that takes longer than this.
        verbose: 0 shows nothing of the runs, 1 (or True) their output without the runtimes'
            start-up notices, 2 all of it. Each run's log keeps all of it.
        backend: the Keras backend the runs train and measure under: "tensorflow", "jax" or
            "torch" (this process's own backend does not matter).
        data_parallel: train on every visible device with `lk.data_parallel()` (JAX or
            TensorFlow); `batch_size` is the global batch.

    Returns:
        The results dict also written to `out/results.json`.
    """
    config = dict(locals(), kind="compare", modes=list(modes), targets=list(targets), ranks=None)
    unknown = [mode for mode in modes if mode not in MODES]
    if unknown or not modes:
        raise ValueError(f"Unknown mode(s) {unknown or list(modes)}. Known: {', '.join(MODES)}.")
    runs = [(mode, mode, rank) for mode in modes]
    return run_experiment(config, runs, list(sample_prompts), timeout_s, verbose)


# Settings that describe the experiment in results.json; the others only steer this process.
_NOT_CONFIG = ("out", "sample_prompts", "timeout_s", "verbose")


def run_experiment(config, runs, sample_prompts, timeout_s, verbose):
    """What `compare` and `sweep` share: checks, weights, a new folder, one process a run.

    Args:
        config: the experiment's settings (those of `compare`, `kind` included).
        runs: `(name, mode, rank)` for each run, in order.
        sample_prompts, timeout_s, verbose: as in `compare`.
    """
    if config["steps"] < 2:
        raise ValueError(
            f"steps must be at least 2 (the first is timed apart), got {config['steps']}."
        )
    # Checked here, before any process starts, not in each child after its model is built.
    check_targets(config["targets"])
    check_backend(config["backend"])
    if config["data_parallel"] and config["backend"] == "torch":
        raise ValueError(
            "data_parallel needs the jax or tensorflow backend: Keras's distribution API has no "
            "torch data parallel. Use backend='jax' (--backend jax)."
        )
    weights, why = choose_weights(config["preset"], config["weights"])
    _say(f"weights: {weights} ({why})")
    out = new_results_folder(config["out"], config["kind"])
    keep_this_process_off_the_gpu()
    warm_tokenizer_cache(config["preset"], weights, config["data"])
    config = {key: value for key, value in config.items() if key not in _NOT_CONFIG}
    config["weights"] = weights
    specs = [
        dict(config, name=name, mode=mode, rank=rank, sample_prompts=sample_prompts, verbose=1)
        for name, mode, rank in runs
    ]
    echo = {0: False, 1: StartupNoiseFilter()}.get(int(verbose), True)
    results = run_specs(specs, config, out, echo=echo, timeout_s=timeout_s)
    results["folder"] = out
    return results
