"""The checks a `RunSpec` runs on its settings, before any folder, process or model exists.

Keras-free and quick, so that a bad argument is refused in well under a second, with a message
naming both the Python argument and the command-line flag. Which checks run, and in what order,
is `RunSpec`'s (`lora_keras.experiments.run_spec`); a new setting adds its check there.
"""

import json
import math
import numbers
import os

from lora_keras.experiments.train_one import MODES
from lora_keras.mixlora.settings import (
    AUX_LOSS_SCOPES,
    MAX_EXPERTS,
    MIXLORA_DEFAULTS,
    MIXLORA_VARIANTS,
)
from lora_keras.models.architectures import (
    BUILTIN_PRESETS,
    GPT2_ARCHITECTURES,
    KNOWN_PRESETS,
    has_pretrained_weights,
)

# Python arguments whose flag is not the name with dashes.
_FLAGS = {"timeout_s": "--timeout"}


def flag_name(name):
    """The command-line flag of the Python argument `name`: `--batch-size` for `batch_size`."""
    return _FLAGS.get(name, "--" + name.replace("_", "-"))


def flag(name):
    """`name (--flag)`: how an error names an argument for Python and command-line users."""
    return f"{name} ({flag_name(name)})"


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
    if not modes:
        raise ValueError(
            f"{flag('modes')} names no mode: give at least one, comma-separated, among: "
            f"{', '.join(MODES)}."
        )
    unknown = [mode for mode in modes if mode not in MODES]
    if unknown:
        raise ValueError(
            f"Unknown mode(s) {unknown} in {flag('modes')}. Known: {', '.join(MODES)}."
        )
    check_no_repeats("modes", modes)


def check_ranks(ranks):
    if isinstance(ranks, (str, bytes)) or not ranks:
        raise ValueError(f"{flag('ranks')} must be a list of integers, got {ranks!r}.")
    for rank in ranks:
        check_integer("ranks", rank, 1)
    check_no_repeats("ranks", ranks)


# What a sweep trained `together` cannot run with, and why (each tried: it fails or is wrong).
TOGETHER_REFUSES = {
    "chunked_loss": "the chunked loss never forms the logits from which each adapter's loss of "
    "every step is read (its own rows of the batch)",
    "data_parallel": "each adapter's loss is read from its own rows of the whole batch, "
    "which a split over devices would cut apart",
}


def check_together(spec):
    """A `RunSpec` with `together` can train its ranks as adapters of one frozen model."""
    if not spec.together:
        return
    if spec.kind != "sweep":
        raise ValueError(
            f"{flag('together')} trains the ranks of a sweep together: use "
            "lk.sweep(..., together=True) (lora-keras sweep --together), or "
            "RunSpec(kind='sweep', ranks=..., rank=None, together=True)."
        )
    if len(spec.ranks) < 2:
        raise ValueError(
            f"{flag('together')} trains several ranks as adapters of one frozen model and "
            f"compares them with their runs one after another: give at least two ranks "
            f"({flag_name('ranks')} 4,8), got {list(spec.ranks)}."
        )
    others = [mode for mode in spec.modes if mode not in ("full", "lora")]
    if others or "lora" not in spec.modes:
        raise ValueError(
            f"{flag('together')} trains plain LoRA adapters (mode lora), the only kind several "
            f"adapters on one model hold; got modes {list(spec.modes)}. Full fine-tuning may "
            f"stay as a baseline (--with-full); sweep {', '.join(others) or 'them'} without "
            "--together."
        )
    chosen = {**spec.options.to_json(), "data_parallel": spec.data_parallel}
    for name, why in TOGETHER_REFUSES.items():
        if chosen[name]:
            raise ValueError(
                f"{flag('together')} cannot run with {flag(name)}: {why}. Run without "
                f"{flag_name(name)}."
            )


def architecture(preset):
    """The backbone shape of a known preset or a preset folder; `None` if it cannot be read."""
    if preset in GPT2_ARCHITECTURES:
        return GPT2_ARCHITECTURES[preset]
    try:
        return check_preset_folder(preset, "random")
    except ValueError:
        return None


# What loading a preset folder reads: KerasHub's `GPT2CausalLM.from_preset` (the backbone's
# config, the tokenizer's, its vocabulary and merges, and the weights unless they are random)
# and this package (the backbone's shape, from config.json).
PRESET_FILES = (
    "config.json",
    "tokenizer.json",
    "assets/tokenizer/vocabulary.json",
    "assets/tokenizer/merges.txt",
)
PRESET_WEIGHTS_FILE = "model.weights.h5"
BACKBONE_FIELDS = (
    "vocabulary_size",
    "num_layers",
    "num_heads",
    "hidden_dim",
    "intermediate_dim",
    "max_sequence_length",
)


def check_preset_folder(folder, weights):
    """A GPT-2 folder written by `save_to_preset`: the files and fields loading it reads.

    Returns:
        The backbone's config (`config.json`'s "config"), its `BACKBONE_FIELDS` checked.
    """

    def refuse(what):
        raise ValueError(
            f"{flag('preset')} {folder!r} is not a GPT-2 preset folder: {what}. Give a folder "
            "written by `lm.save_to_preset(folder)` from a GPT2CausalLM, or a preset name: "
            f"{', '.join(KNOWN_PRESETS)}."
        )

    needed = PRESET_FILES + ((PRESET_WEIGHTS_FILE,) if weights != "random" else ())
    missing = [name for name in needed if not os.path.isfile(os.path.join(folder, name))]
    if missing:
        weights_note = " (weights='random', --weights random, needs no weights file)" * (
            missing == [PRESET_WEIGHTS_FILE]
        )
        refuse(f"it lacks {', '.join(missing)}{weights_note}")
    try:
        with open(os.path.join(folder, "config.json"), encoding="utf-8") as file:
            saved = json.load(file)
    except (OSError, UnicodeDecodeError) as error:
        refuse(f"its config.json cannot be read ({error})")
    except json.JSONDecodeError as error:
        refuse(f"its config.json is not valid JSON ({error.msg}, line {error.lineno})")
    if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
        refuse('its config.json has no "config" object (the backbone\'s settings)')
    class_name = saved.get("class_name")
    if not (isinstance(class_name, str) and class_name.endswith("GPT2Backbone")):
        refuse(f"its config.json describes a {class_name!r}, not a GPT2Backbone")
    config = saved["config"]
    for field in BACKBONE_FIELDS:
        value = config.get(field)
        if field not in config:
            refuse(f"its config.json's config lacks {field}")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            refuse(f"its config.json's config has {field}={value!r}, not a positive integer")
    return config


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
    if os.path.isdir(preset):
        check_preset_folder(preset, weights)  # None: a folder's own weights
    if weights == "pretrained" and preset in BUILTIN_PRESETS and not has_pretrained_weights(preset):
        raise ValueError(
            f"{flag('weights')} 'pretrained': {preset!r} is this package's own architecture "
            "and has no pretrained weights. Use weights='random' (--weights random), or "
            "--preset gpt2_mini, which the package ships pretrained."
        )


def check_weights_reachable(preset, weights):
    """Pretrained weights not on disk need the download host: refused (ConnectionError) if not."""
    if weights == "pretrained" and not os.path.isdir(preset) and preset not in BUILTIN_PRESETS:
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


def check_data(data, text_field, steps, batch_size, name="data"):
    """The texts can be read and give `steps` batches; returns how many documents they hold.

    `name` is the argument that gave them: "data", or "keep_data" (no steps: 0)."""
    from lora_keras.data.load_texts import check_reddit_tifu_available, read_documents

    if not isinstance(text_field, str) or not text_field:
        raise ValueError(f"{flag('text_field')} must be a field name, got {text_field!r}.")
    if data == "reddit_tifu":
        check_reddit_tifu_available()
        return None  # 79,740 documents: more than any sensible number of steps needs
    try:
        documents = len(read_documents(os.fspath(data), text_field))
    except (ValueError, FileNotFoundError) as error:
        if flag_name(name) in str(error):
            raise
        raise type(error)(f"{flag(name)}: {error}") from error
    if steps * batch_size > documents:
        raise ValueError(
            f"{flag('steps')} {steps} at {flag('batch_size')} {batch_size} needs "
            f"{steps * batch_size:,} documents; {data!r} holds {documents:,}. Use --steps <= "
            f"{max(documents // batch_size, 0)}, a smaller --batch-size, or more text."
        )
    return documents


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

    integer("num_experts", 1, MAX_EXPERTS, " (the MixLoRA paper uses 8)")
    integer("top_k", 1, settings["num_experts"], " (num_experts)")
    smallest = math.inf if shape is None else smallest_projection(shape, ("ffn_in",))
    integer("rank", 1, smallest, " (the smallest size of the feed-forward block)")
    for key, allowed in (("variant", MIXLORA_VARIANTS), ("aux_loss_scope", AUX_LOSS_SCOPES)):
        if settings[key] not in allowed:
            raise ValueError(
                f"mixlora= {key} must be one of {', '.join(allowed)}, got {settings[key]!r}."
            )
    number(settings, "alpha", minimum=0.0, above=True)
    number(settings, "aux_loss_coef", minimum=0.0)
    number(settings, "dropout", minimum=0.0, below=1.0)


def number(settings, key, minimum, above=False, below=None):
    """A finite `mixlora=` number at least (or, `above`, more than) `minimum`, under `below`."""
    value = settings[key]
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"mixlora= {key} must be a finite number, got {value!r}.")
    low = value > minimum if above else value >= minimum
    if not low or (below is not None and value >= below):
        bounds = f"{'above' if above else 'at least'} {minimum}"
        bounds += f" and below {below}" if below is not None else ""
        raise ValueError(f"mixlora= {key} must be {bounds}, got {value}.")
