"""The held-out documents a run evaluates on: never trained on, the same for every mode.

"target" is held out of the data a run fine-tunes on: its first documents, as many as asked
while enough remain for the training steps. "keep" is what the model knew before and should not
forget: for `gpt2_mini` by default the held-out documents of the five families it was pretrained
on (`lk.corpus_split`), or any data source (`--keep-data`), its first documents.
"""

from lora_keras.data.corpus_split import corpus_split
from lora_keras.data.embedded_corpus import FAMILIES
from lora_keras.models.architectures import GPT2_MINI_HELDOUT_FAMILY, SHIPPED_PRESETS

# `keep_data="none"`: evaluate no keep set, even where the preset has one.
NO_KEEP = "none"


def split_heldout(texts, wanted, needed):
    """`(training texts, held-out documents)`: the first documents held out of `texts`.

    Args:
        texts: a list of strings, or a `tf.data.Dataset` of them (`lk.load_texts`).
        wanted: how many documents to hold out at most.
        needed: how many must remain to train on (steps x batch size); fewer are held out
            where the data has no more.

    Returns:
        The texts left to train on (of the type given) and the held-out documents (a list).
    """
    if isinstance(texts, list):
        count = max(0, min(wanted, len(texts) - needed))
        return texts[count:], texts[:count]
    size = int(texts.cardinality())  # negative where unknown: a TFDS set holds plenty
    count = wanted if size < 0 else max(0, min(wanted, size - needed))
    held = [text.decode("utf-8") for text in texts.take(count).as_numpy_iterator()]
    return texts.skip(count), held


def keep_documents(preset, keep_data, count, text_field="text"):
    """`(documents, description)` of what a run should not forget, or `(None, None)`.

    Args:
        preset: the run's preset; a preset the package pretrained itself (`gpt2_mini`) has a
            default: the held-out documents of its pretraining families.
        keep_data: None (that default, or nothing), "none", or a data source as `lk.load_texts`
            takes it ("embedded", "embedded:weather", "reddit_tifu", a path).
        count: how many documents of `keep_data` to evaluate on (its first ones).
    """
    from lora_keras.data import load_texts

    if keep_data == NO_KEEP or (keep_data is None and preset not in SHIPPED_PRESETS):
        return None, None
    if keep_data is None:
        documents = corpus_split(GPT2_MINI_HELDOUT_FAMILY).keep_heldout
        families = [family for family in FAMILIES if family != GPT2_MINI_HELDOUT_FAMILY]
        return documents, (
            f"embedded corpus, held-out documents of {preset}'s pretraining families "
            f"({', '.join(families)}; {len(documents)} documents, never trained on)"
        )
    _, documents = split_heldout(load_texts(keep_data, text_field=text_field), count, 0)
    return documents, f"{keep_data}, its first {len(documents)} documents"
