"""`load_gpt2`: the tutorial's `GPT2CausalLM`, downloaded from KerasHub or built offline."""

import numbers
import os

import keras_hub

from lora_keras import network
from lora_keras.data.embedded_corpus import embedded_corpus
from lora_keras.models import shipped_preset
from lora_keras.models.architectures import (
    BUILTIN_PRESETS,
    GPT2_ARCHITECTURES,
    KNOWN_PRESETS,
    SHIPPED_PRESETS,
)
from lora_keras.models.preset_cache import cached_preset_folder
from lora_keras.models.tokenizer import local_gpt2_tokenizer

WEIGHTS = ("pretrained", "random")


def _check_sequence_length(sequence_length, maximum, preset):
    if isinstance(sequence_length, bool) or not isinstance(sequence_length, numbers.Integral):
        raise ValueError(f"sequence_length must be an integer, got {sequence_length!r}.")
    if sequence_length < 1:
        raise ValueError(
            f"sequence_length must be at least 1 token, got {sequence_length}. GPT-2 trains "
            "on sequences of up to its number of positions, e.g. 128."
        )
    if sequence_length > maximum:
        raise ValueError(
            f"sequence_length={sequence_length} is above the maximum of {preset!r}, which has "
            f"position embeddings for {maximum} tokens. Use sequence_length <= {maximum}."
        )


def _from_folder(folder, weights, sequence_length, dtype):
    # A folder needs no network; "pretrained" means the weights saved in it.
    lm = keras_hub.models.GPT2CausalLM.from_preset(
        folder, load_weights=weights == "pretrained", dtype=dtype
    )
    _check_sequence_length(sequence_length, lm.backbone.max_sequence_length, folder)
    lm.preprocessor.sequence_length = sequence_length
    return lm, f"tokenizer saved in {folder}"


def _download(preset, sequence_length, dtype):
    if preset in BUILTIN_PRESETS:
        raise ValueError(
            f"{preset!r} is this package's own architecture and has no pretrained weights. "
            f"Use load_gpt2({preset!r}, weights='random'), or 'gpt2_mini', which the package "
            "ships pretrained."
        )
    cached = cached_preset_folder(preset)
    if cached is not None:
        # What kagglehub would return for this versioned handle, without any network.
        lm, _ = _from_folder(cached, "pretrained", sequence_length, dtype)
        return lm, f"{preset} pretrained BPE from the kagglehub cache ({cached})"
    if not network.pretrained_reachable():
        host, port = network.download_host()
        raise ConnectionError(
            f"Cannot reach {host}:{port}, where KerasHub downloads {preset!r}: this machine "
            "looks offline. The offline path builds the same architecture with random weights "
            f"and a locally trained tokenizer: load_gpt2({preset!r}, weights='random')."
        )
    lm = keras_hub.models.GPT2CausalLM.from_preset(preset, dtype=dtype)
    lm.preprocessor.sequence_length = sequence_length
    return lm, f"{preset} pretrained BPE from KerasHub"


def _build_shipped(preset, weights, sequence_length, dtype):
    # The package's own files: the same tokenizer for both weights, and no network.
    architecture = GPT2_ARCHITECTURES[preset]
    tokenizer = shipped_preset.shipped_tokenizer(preset)
    preprocessor = keras_hub.models.GPT2CausalLMPreprocessor(
        tokenizer=tokenizer, sequence_length=sequence_length
    )
    backbone = keras_hub.models.GPT2Backbone(**architecture, dtype=dtype)
    if weights == "pretrained":
        backbone.load_weights(shipped_preset.shipped_folder(preset) / shipped_preset.WEIGHTS_FILE)
    lm = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=preprocessor)
    description = (
        f"byte-level BPE shipped with {preset}, {tokenizer.vocabulary_size():,} tokens (model "
        f"vocabulary {architecture['vocabulary_size']:,}), trained on its pretraining documents"
    )
    return lm, description


def _build_random(preset, sequence_length, tokenizer_texts, dtype):
    architecture = GPT2_ARCHITECTURES[preset]
    if tokenizer_texts is None:
        tokenizer_texts, corpus = embedded_corpus(), "the embedded corpus"
    else:
        corpus = "the given texts"
    tokenizer, folder = local_gpt2_tokenizer(tokenizer_texts, architecture["vocabulary_size"])
    preprocessor = keras_hub.models.GPT2CausalLMPreprocessor(
        tokenizer=tokenizer, sequence_length=sequence_length
    )
    backbone = keras_hub.models.GPT2Backbone(**architecture, dtype=dtype)
    lm = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=preprocessor)
    description = (
        f"local byte-level BPE, {tokenizer.vocabulary_size():,} tokens (model vocabulary "
        f"{architecture['vocabulary_size']:,}), trained on {corpus} (cached at {folder})"
    )
    return lm, description


def load_gpt2(preset, weights="pretrained", sequence_length=128, tokenizer_texts=None, dtype=None):
    """A `keras_hub.models.GPT2CausalLM` with its preprocessor attached, online or offline.

    `lm.fit(text_dataset)` and `lm.generate("I like basketball")` work as in the KerasHub
    tutorial. `lm.provenance` is a dict saying where the model came from, for reports:
    `preset`, `weights` ("pretrained" or "random"), `tokenizer` (in words) and `source`:
    "kerashub" (a KerasHub preset, downloaded or built from its shape), "local_folder" or
    "builtin" (`gpt2_tiny` and `gpt2_mini`, ours).

    Args:
        preset: a KerasHub GPT-2 preset (`gpt2_base_en`, `gpt2_medium_en`, `gpt2_large_en`,
            `gpt2_extra_large_en`), `gpt2_tiny`, `gpt2_mini`, or a folder (str or path)
            written by `lm.save_to_preset`.
        weights: "pretrained" downloads the KerasHub preset, or loads it with no network when
            kagglehub's cache already holds it (for a folder: the weights saved in it; for
            `gpt2_mini`: the weights the package ships, with no network).
            Otherwise it first checks that the download host answers, and raises
            `ConnectionError` within seconds when it does not. "random" builds the preset's exact
            architecture (from `GPT2_ARCHITECTURES`) with no download, so its time and memory
            are the real model's, with a byte-level BPE trained locally and cached on disk (a
            folder and `gpt2_mini` keep their own tokenizer).
        sequence_length: int. Tokens per training sequence, at most the model's positions.
        tokenizer_texts: what the random-weights tokenizer trains on: an iterable of strings or
            a `tf.data.Dataset` of strings. `None` means the embedded corpus. Not used by a
            folder or `gpt2_mini`, which have their own tokenizer.
        dtype: passed to the backbone, e.g. "bfloat16" or "mixed_float16". `None`: Keras's
            default.

    Example:
    ```python
    import lora_keras as lk

    lm = lk.load_gpt2("gpt2_tiny", weights="random")
    lm.fit(lk.load_texts("embedded").batch(4).take(1))
    print(lm.provenance["tokenizer"], lm.generate("The weather", max_length=20))
    ```
    """
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be 'pretrained' or 'random'. Received: weights={weights!r}")
    # KerasHub takes a folder only as a string.
    preset = os.fspath(preset)
    if os.path.isdir(preset):
        lm, tokenizer = _from_folder(preset, weights, sequence_length, dtype)
        source = "local_folder"
    elif preset in GPT2_ARCHITECTURES:
        maximum = GPT2_ARCHITECTURES[preset]["max_sequence_length"]
        # Checked before any download or build, so a bad length costs nothing.
        _check_sequence_length(sequence_length, maximum, preset)
        if preset in SHIPPED_PRESETS:
            lm, tokenizer = _build_shipped(preset, weights, sequence_length, dtype)
        elif weights == "random":
            lm, tokenizer = _build_random(preset, sequence_length, tokenizer_texts, dtype)
        else:
            lm, tokenizer = _download(preset, sequence_length, dtype)
        source = "builtin" if preset in BUILTIN_PRESETS else "kerashub"
    else:
        raise ValueError(
            f"Unknown preset {preset!r}. Known presets: {', '.join(KNOWN_PRESETS)}; or give the "
            "path of a folder written by `save_to_preset`."
        )
    lm.provenance = {
        "preset": preset,
        "weights": weights,
        "tokenizer": tokenizer,
        "source": source,
    }
    return lm
