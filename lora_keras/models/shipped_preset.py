"""The presets whose files ship inside the package: read from its folder, with no network.

A shipped preset's folder, `lora_keras/models/presets/<preset>/`, holds what
`python -m lora_keras.models.pretrain_mini` wrote: `backbone.weights.h5` (the backbone's weights),
`vocabulary.json` and `merges.txt` (its byte-level BPE tokenizer) and `pretraining.json` (how it
was made: seed, settings, per-step losses, time, machine). The architecture is the preset's row of
`GPT2_ARCHITECTURES`, so the table stays the one place shapes are written.
"""

import json
from pathlib import Path

import keras_hub

WEIGHTS_FILE = "backbone.weights.h5"
VOCABULARY_FILE = "vocabulary.json"
MERGES_FILE = "merges.txt"
RECORD_FILE = "pretraining.json"


def shipped_folder(preset):
    """The folder holding `preset`'s shipped files (it may not exist for an unknown preset)."""
    return Path(__file__).parent / "presets" / preset


def write_tokenizer_files(folder, vocabulary, merges):
    """Write a tokenizer as a shipped preset keeps it: `vocabulary.json` and `merges.txt`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MERGES_FILE).write_text("".join(f"{merge}\n" for merge in merges), encoding="utf-8")
    (folder / VOCABULARY_FILE).write_text(
        json.dumps(vocabulary, ensure_ascii=False), encoding="utf-8"
    )


def shipped_tokenizer(preset, folder=None):
    """`preset`'s shipped tokenizer, a `keras_hub.models.GPT2Tokenizer`.

    Args:
        preset: a name from `SHIPPED_PRESETS`, e.g. "gpt2_mini".
        folder: where the files are; `None` means the package's own folder for `preset`.
    """
    folder = Path(folder or shipped_folder(preset))
    return keras_hub.models.GPT2Tokenizer(
        vocabulary=json.loads((folder / VOCABULARY_FILE).read_text(encoding="utf-8")),
        merges=(folder / MERGES_FILE).read_text(encoding="utf-8").splitlines(),
    )


def shipped_record(preset):
    """How `preset` was pretrained, as recorded in its `pretraining.json`.

    Example:
    ```python
    record = shipped_record("gpt2_mini")
    record["seed"], record["steps"], record["losses"][:3]
    ```
    """
    return json.loads((shipped_folder(preset) / RECORD_FILE).read_text(encoding="utf-8"))
