"""A batch of prompts, each with its own adapter, generates what each adapter alone does."""

import keras
import numpy as np
import pytest
from conftest import make_short_text_lm
from test_multi_lora_model import randomize

import lora_keras as lk
from lora_keras.multi_lora import apply_multi_lora, generate

# Portable: CI runs these under JAX and torch too (`-m backends`).
pytestmark = pytest.mark.backends

PROMPTS = ["The weather", "Mix the", "The weather", "A"]
NAMES = ["calm", "wild", "wild", "calm"]


def short_lm(cache):
    keras.utils.set_random_seed(0)  # the same base weights every time
    lm = make_short_text_lm(cache)
    lm.compile(sampler="greedy")
    return lm


def test_mixed_batch_generates_as_each_adapter_alone(tmp_path):
    cache = tmp_path / "cache"
    lm = short_lm(cache)
    apply_multi_lora(lm, {"calm": {"rank": 2, "alpha": 4.0}, "wild": {"rank": 4, "alpha": 64.0}})
    randomize(lm, seed=3)
    lm.compile(sampler="greedy")
    mixed = generate(lm, PROMPTS, adapters=NAMES, max_length=12)
    # The same through preprocessed inputs that carry adapter_ids, token by token.
    x = lm.preprocessor.generate_preprocess(PROMPTS, sequence_length=12)
    ids = np.array([0, 1, 1, 0], "int32")  # NAMES as ids
    tokens = generate(lm, {**x, "adapter_ids": ids}, adapters=None, stop_token_ids=None)
    assert tokens["token_ids"].shape == (4, 12)
    for k, name in enumerate(("calm", "wild")):
        path = tmp_path / f"{name}.lora.h5"
        lk.save_adapter(lm, path, adapter=name)
        alone = short_lm(cache)
        lk.load_adapter(alone, path)
        expected = alone.generate(PROMPTS, max_length=12)
        rows = [i for i, n in enumerate(NAMES) if n == name]
        assert [mixed[i] for i in rows] == [expected[i] for i in rows]
        expected = alone.make_generate_function()(x, stop_token_ids=None)["token_ids"]
        expected = np.asarray(keras.ops.convert_to_numpy(expected))
        np.testing.assert_array_equal(tokens["token_ids"][ids == k], expected[ids == k])
    assert mixed != short_lm(cache).generate(PROMPTS, max_length=12)  # the adapters matter
    # The same prompt (rows 0 and 2) continues differently under another adapter.
    assert not np.array_equal(tokens["token_ids"][0], tokens["token_ids"][2])


def test_generate_checks_its_adapters(tmp_path):
    lm = short_lm(tmp_path / "cache")
    apply_multi_lora(lm, {"calm": {"rank": 2}})
    with pytest.raises(ValueError, match="Unknown adapter 'storm'"):
        generate(lm, ["A"], adapters=["storm"], max_length=8)
    with pytest.raises(ValueError, match="2 prompts need 2 adapter names"):
        generate(lm, ["A", "B"], adapters=["calm"], max_length=8)
