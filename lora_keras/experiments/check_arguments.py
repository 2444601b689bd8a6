"""Every argument of `compare` and `sweep` checked before any folder, process or model exists.

Keras-free and quick, so that a bad argument is refused in well under a second, with a message
naming both the Python argument and the command-line flag. A new option adds its check to
`check_arguments`.
"""

import json
import math
import numbers
import os

from lora_keras.backends import check_backend
from lora_keras.experiments.train_one import MODES
from lora_keras.levers.options import OPTIONS
from lora_keras.mixlora.settings import MIXLORA_DEFAULTS, MIXLORA_VARIANTS
from lora_keras.models.architectures import BUILTIN_PRESETS, GPT2_ARCHITECTURES, KNOWN_PRESETS
from lora_keras.targets import check_targets

# Python arguments whose flag is not the name with dashes.
_FLAGS = {"timeout_s": "--timeout", "ranks": "--ranks", "modes": "--modes"}


def flag(name):
    """`name (--flag)`: how an error names an argument for Python and command-line users."""
    return f"{name} ({_FLAGS.get(name, '--' + name.replace('_', '-'))})"


def check_integer(name, value, minimum, maximum=None, why=""):
    """An int (not a bool) in `[minimum, maximum]`, or a ValueError naming the flag."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{flag(name)} must be an integer, got {value!r}.")
    if value < minimum:
        raise ValueError(f"{flag(name)} must be at least {minimum}, got {value}.")
    if maximum is not None and value > maximum:
        raise ValueError(f"{flag(name)} must be at most {maximum}{why}, got {value}.")
    return int(value)


def check_positive(name, value, optional=False):
    """A finite number above 0 (or `None` when `optional`), or a ValueError naming the flag."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{flag(name)} must be a number, got {value!r}.")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{flag(name)} must be a finite number above 0, got {value}.")
    return value


def check_no_repeats(name, values):
    repeated = sorted({str(v) for v in values if list(values).count(v) > 1})
    if repeated:
        raise ValueError(
            f"{flag(name)} repeats {', '.join(repeated)}: each run needs its own name and files. "
            "List each once."
        )


def check_modes(modes):
    unknown = [mode for mode in modes if mode not in MODES]
    if unknown or not modes:
        raise ValueError(
            f"Unknown mode(s) {unknown or list(modes)} in {flag('modes')}. Known: "
            f"{', '.join(MODES)}."
        )
    check_no_repeats("modes", modes)


def check_ranks(ranks):
    if isinstance(ranks, (str, bytes)) or not ranks:
        raise ValueError(f"{flag('ranks')} must be a list of integers, got {ranks!r}.")
    for rank in ranks:
        check_integer("ranks", rank, 1)
    check_no_repeats("ranks", ranks)


def architecture(preset):
    """The backbone shape of a known preset or a preset folder; `None` if it cannot be read."""
    if preset in GPT2_ARCHITECTURES:
        return GPT2_ARCHITECTURES[preset]
    try:
        with open(os.path.join(preset, "config.json"), encoding="utf-8") as file:
            return json.load(file)["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # the run that loads it says what is wrong, in its own words


def smallest_projection(shape, targets):
    """The smallest input or output size among the projections `targets` name."""
    feed_forward = {"ffn_in", "ffn_out"} & set(targets)
    return min(shape["hidden_dim"], shape["intermediate_dim"] if feed_forward else math.inf)


def check_preset_and_weights(preset, weights):
    if not (isinstance(preset, str) and (os.path.isdir(preset) or preset in KNOWN_PRESETS)):
        raise ValueError(
            f"Unknown {flag('preset')} {preset!r}. Known presets: {', '.join(KNOWN_PRESETS)}; "
            "or give the path of a folder written by `save_to_preset`."
        )
    if weights not in (None, "pretrained", "random"):
        raise ValueError(f"{flag('weights')} must be 'pretrained' or 'random', got {weights!r}.")
    if weights == "pretrained" and preset in BUILTIN_PRESETS:
        raise ValueError(
            f"{flag('weights')} 'pretrained': {preset!r} is this package's own architecture "
            "and has no pretrained weights. Use weights='random' (--weights random)."
        )
    if weights == "pretrained" and not os.path.isdir(preset):
        from lora_keras.models import pretrained_reachable
        from lora_keras.models.preset_cache import cached_preset_folder
        from lora_keras.network import download_host

        if not cached_preset_folder(preset) and not pretrained_reachable():
            host, port = download_host()
            raise ConnectionError(
                f"{flag('weights')} 'pretrained': cannot reach {host}:{port}, where KerasHub "
                f"downloads {preset!r}; this machine looks offline. Use weights='random' "
                "(--weights random): the same architecture with random weights."
            )


def check_data(data, text_field, steps, batch_size):
    """The texts can be read and give `steps` batches; returns how many documents they hold."""
    from lora_keras.data.load_texts import check_reddit_tifu_available, read_documents

    if not isinstance(text_field, str) or not text_field:
        raise ValueError(f"{flag('text_field')} must be a field name, got {text_field!r}.")
    if data == "reddit_tifu":
        check_reddit_tifu_available()
        return None  # 79,740 documents: more than any sensible number of steps needs
    documents = len(read_documents(os.fspath(data), text_field))
    if steps * batch_size > documents:
        raise ValueError(
            f"{flag('steps')} {steps} at {flag('batch_size')} {batch_size} needs "
            f"{steps * batch_size:,} documents; {data!r} holds {documents:,}. Use --steps <= "
            f"{max(documents // batch_size, 0)}, a smaller --batch-size, or more text."
        )
    return documents


def check_jax_remat(config):
    """JAX refuses remat with dropout, and every GPT-2 backbone has dropout 0.1."""
    if config.get("backend") != "jax":
        return
    why = "GPT-2's blocks have dropout 0.1 and JAX refuses Keras's dropout inside jax.checkpoint"
    if config.get("remat"):
        raise ValueError(
            f"remat (--remat) cannot run on backend='jax' (--backend jax): {why}. Run without "
            "--remat, or use --backend tensorflow or torch."
        )
    if config.get("options_sweep"):
        raise ValueError(
            f"options_sweep (--options-sweep) has a remat run, which cannot run on "
            f"backend='jax' (--backend jax): {why}. Sweep with --backend tensorflow or torch, "
            "or turn the other levers on one comparison at a time (--jit-compile, "
            "--mixed-precision, --chunked-loss)."
        )


def check_options_sweep(config):
    """An options sweep turns each lever on alone, against runs with every lever off."""
    chosen = [
        name for name, (default, _) in OPTIONS.items() if config.get(name, default) != default
    ]
    if config.get("options_sweep") and chosen:
        raise ValueError(
            f"options_sweep (--options-sweep) turns each lever on alone against the plain run, "
            f"so it takes no lever of its own; got {', '.join(flag(name) for name in chosen)}. "
            "Drop those, or compare them without --options-sweep."
        )


def check_mixlora_remat(config):
    """Recomputing a MixLoRA block drops its load-balance loss from the router's gradient."""
    if "mixlora" in config.get("modes", ()) and (
        config.get("remat") or config.get("options_sweep")
    ):
        raise ValueError(
            "Mode mixlora (--modes) cannot run with remat (--remat, or the remat run of "
            "--options-sweep): recomputing a block in the backward pass leaves MixLoRA's "
            "load-balance loss without a gradient to the router. Measure mixlora without remat."
        )


def check_keras_lora_targets(modes, targets):
    """Keras's own `enable_lora` wraps query and value only, whatever --targets says."""
    if "keras_lora" in modes and set(targets) != {"query", "value"}:
        raise ValueError(
            f"Mode keras_lora (--modes) is Keras's built-in LoRA, which wraps query and value "
            f"only; {flag('targets')} asks for {', '.join(targets)}. Use --targets query,value, "
            "or leave keras_lora out of --modes."
        )


def check_mixlora(settings, shape):
    """The `mixlora=` settings of a comparison (Python only, no flag), defaults filled in."""
    unknown = sorted(set(settings) - set(MIXLORA_DEFAULTS))
    if unknown:
        raise ValueError(
            f"Unknown mixlora= setting(s) {unknown}. Known: {', '.join(MIXLORA_DEFAULTS)}."
        )

    def integer(key, minimum, maximum=math.inf, why=""):
        value = settings[key]
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ValueError(f"mixlora= {key} must be an integer, got {value!r}.")
        if not minimum <= value <= maximum:
            bounds = f"at least {minimum}" if maximum == math.inf else f"{minimum} to {maximum}"
            raise ValueError(f"mixlora= {key} must be {bounds}{why}, got {value}.")

    integer("num_experts", 1)
    integer("top_k", 1, settings["num_experts"], " (num_experts)")
    smallest = math.inf if shape is None else smallest_projection(shape, ("ffn_in",))
    integer("rank", 1, smallest, " (the smallest size of the feed-forward block)")
    if settings["variant"] not in MIXLORA_VARIANTS:
        raise ValueError(
            f"mixlora= variant must be one of {', '.join(MIXLORA_VARIANTS)}, "
            f"got {settings['variant']!r}."
        )


def check_arguments(config):
    """Checks a comparison's settings (the `config` of results.json), fastest checks first.

    Raises:
        ValueError (or FileNotFoundError, ConnectionError, RuntimeError for data and weights
        that cannot be had) naming the argument and its flag.
    """
    check_preset_and_weights(config["preset"], config["weights"])
    check_backend(config.get("backend", "tensorflow"))
    if config.get("data_parallel") and config.get("backend") == "torch":
        raise ValueError(
            f"{flag('data_parallel')} needs the jax or tensorflow backend: Keras's distribution "
            "API has no torch data parallel. Use backend='jax' (--backend jax)."
        )
    check_jax_remat(config)
    check_options_sweep(config)
    check_mixlora_remat(config)
    targets = check_targets(config["targets"])
    check_keras_lora_targets(config["modes"], targets)
    steps = check_integer("steps", config["steps"], 2, why=" (the first is timed apart)")
    batch_size = check_integer("batch_size", config["batch_size"], 1)
    check_integer("seed", config["seed"], 0)
    check_positive("alpha", config["alpha"])
    check_positive("learning_rate", config["learning_rate"])
    check_positive("timeout_s", config.get("timeout_s"), optional=True)
    if config.get("sample_length") is not None:
        check_integer("sample_length", config["sample_length"], 1)
    shape = architecture(config["preset"])
    if shape is not None:
        maximum = shape["max_sequence_length"]
        why = f" ({config['preset']} has position embeddings for {maximum} tokens)"
        check_integer("sequence_length", config["sequence_length"], 1, maximum, why)
        smallest = smallest_projection(shape, targets)
        why = f" (the smallest size of the {', '.join(targets)} projections of {config['preset']})"
        # Full fine-tuning has no rank and MixLoRA its own: neither uses this one.
        if set(config["modes"]) - {"full", "mixlora"}:
            for rank in config.get("ranks") or [config["rank"]]:
                name = "ranks" if config.get("ranks") else "rank"
                check_integer(name, rank, 1, smallest, why)
    else:
        check_integer("sequence_length", config["sequence_length"], 1)
    check_modes(config["modes"])
    if "mixlora" in config["modes"]:
        check_mixlora(config["mixlora"], shape)
    check_data(config["data"], config.get("text_field", "text"), steps, batch_size)
