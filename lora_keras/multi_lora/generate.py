"""Generation with a batch of mixed adapters: each prompt names its own."""

import numpy as np
from keras import ops

from lora_keras.multi_lora.apply import adapter_index


def generate(model, inputs, adapters, max_length=None, stop_token_ids="auto"):
    """Generates from a batch of prompts, each with its own adapter, in one pass of the base.

    KerasHub's `generate` with `adapter_ids` beside the prompts: greedy or sampled as the
    model was compiled (`model.compile(sampler="greedy")`). Each prompt's result is the one
    its adapter would give alone in its own model.

    Args:
        model: a `GPT2CausalLM` holding several adapters (`lk.apply_multi_lora`).
        inputs: a list of strings (the model has a preprocessor), or a dict of
            `token_ids` and `padding_mask` (preprocessed; `adapter_ids` may be in it, then
            `adapters` is None).
        adapters: one adapter name per prompt (a single name: every prompt), or None when
            `inputs` holds `adapter_ids`.
        max_length: the longest sequence, prompt included (strings only; a dict is
            already padded to its length).
        stop_token_ids: as in KerasHub's `generate`: "auto" (the tokenizer's end token,
            strings only), None, or a tuple of ids.

    Returns:
        A list of strings for string prompts, else a dict of NumPy `token_ids` and
        `padding_mask`.

    Example:
    ```python
    lm.compile(sampler="greedy")
    lk.generate(lm, ["Today the sky", "Mix the flour"], adapters=["weather", "recipe"],
                max_length=40)
    ```
    """
    preprocessor = model.preprocessor
    if isinstance(inputs, dict):
        x = dict(inputs)
        count = len(x["token_ids"])
        if stop_token_ids == "auto":
            raise ValueError(
                "Preprocessed prompts have no tokenizer to stop on: pass stop_token_ids=None "
                "(generate to the length of token_ids) or a tuple of token ids."
            )
    else:
        if preprocessor is None:
            raise ValueError(
                "This model has no preprocessor to tokenize string prompts: pass a dict of "
                "token_ids and padding_mask instead."
            )
        prompts = [inputs] if isinstance(inputs, str) else list(inputs)
        count = len(prompts)
        x = preprocessor.generate_preprocess(prompts, sequence_length=max_length)
        x = {key: x[key] for key in ("token_ids", "padding_mask")}
        if stop_token_ids == "auto":
            stop_token_ids = (preprocessor.tokenizer.end_token_id,)
    if adapters is not None:
        if "adapter_ids" in x:
            raise ValueError("Give the adapters once: by `adapters=` or by inputs' adapter_ids.")
        names = [adapters] * count if isinstance(adapters, str) else list(adapters)
        if len(names) != count:
            raise ValueError(f"{count} prompts need {count} adapter names, got {len(names)}.")
        x["adapter_ids"] = np.array([adapter_index(model, name) for name in names], "int32")
    model._check_data(x)
    if isinstance(stop_token_ids, list):
        stop_token_ids = tuple(stop_token_ids)
    outputs = model.make_generate_function()(x, stop_token_ids=stop_token_ids)
    if isinstance(inputs, dict):
        return {key: np.asarray(ops.convert_to_numpy(value)) for key, value in outputs.items()}
    texts = preprocessor.generate_postprocess(outputs)
    texts = texts.numpy().tolist() if hasattr(texts, "numpy") else texts
    return [t.decode("utf-8") if isinstance(t, bytes) else t for t in texts]
