"""The embedded corpus split for pretraining, fine-tuning and held-out evaluation.

One family of documents is the target (what a fine-tuning learns); the other five are what a
model is pretrained on and should not forget. From each family the first `heldout_per_family`
documents of the stream are held out: nothing trains on them, so a loss measured on them says how
well a model does on documents it never saw. `gpt2_mini` was pretrained on `pretrain` of
`corpus_split("recipe")` (see `lora_keras/models/gpt2_mini/pretraining.json`).
"""

import dataclasses
import numbers

from lora_keras.data.embedded_corpus import FAMILIES, embedded_corpus

HELDOUT_PER_FAMILY = 32
PER_FAMILY = 400


@dataclasses.dataclass(frozen=True)
class CorpusSplit:
    """Four disjoint lists of documents of the embedded corpus.

    Attributes:
        target_family: the family held out of pretraining, to fine-tune on.
        pretrain: the other families' documents, less their held-out ones.
        keep_heldout: the other families' held-out documents (what a fine-tuning should not
            forget), never trained on.
        target_train: the target family's documents to fine-tune on.
        target_heldout: the target family's held-out documents, never trained on.
    """

    target_family: str
    pretrain: list
    keep_heldout: list
    target_train: list
    target_heldout: list


def corpus_split(target_family, heldout_per_family=HELDOUT_PER_FAMILY, per_family=PER_FAMILY):
    """The embedded corpus split around `target_family`, the same on every machine.

    Every document is in exactly one list. Held out are the first `heldout_per_family` of each
    family, so they stay the same whatever `per_family` is.

    Args:
        target_family: str, one of `FAMILIES` ("mishap", "weather", "recipe", "match",
            "nature", "letter").
        heldout_per_family: int. Documents of each family held out of all training.
        per_family: int. Documents of each family in all, held out ones included.

    Example:
    ```python
    split = lk.corpus_split("recipe")  # the split gpt2_mini was pretrained on
    len(split.pretrain), len(split.keep_heldout), len(split.target_train)  # 1840, 160, 368
    ```
    """
    if target_family not in FAMILIES:
        raise ValueError(
            f"Unknown target family {target_family!r}. The embedded corpus has the families "
            f"{', '.join(FAMILIES)}."
        )
    for name, value in (("heldout_per_family", heldout_per_family), ("per_family", per_family)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name} must be an integer of at least 1, got {value!r}.")
    if heldout_per_family >= per_family:
        raise ValueError(
            f"heldout_per_family={heldout_per_family} leaves no document of per_family="
            f"{per_family} to train on: hold out fewer, or draw more per family."
        )
    stream = embedded_corpus(per_family=per_family)
    pretrain, keep_heldout = [], []
    for index, family in enumerate(FAMILIES):
        documents = stream[index :: len(FAMILIES)]  # the families take turns in the stream
        held, train = documents[:heldout_per_family], documents[heldout_per_family:]
        if family == target_family:
            target_heldout, target_train = held, train
        else:
            keep_heldout += held
            pretrain += train
    return CorpusSplit(target_family, pretrain, keep_heldout, target_train, target_heldout)
