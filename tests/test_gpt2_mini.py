"""gpt2_mini: the GPT-2 the package pretrains itself, shipped, loaded offline, worth its name."""

import json
from pathlib import Path

import keras
import keras_hub
import numpy as np
import pytest

from lora_keras import network
from lora_keras.data.corpus_split import corpus_split
from lora_keras.models import has_pretrained_weights, load_gpt2, shipped_preset
from lora_keras.models.architectures import (
    BUILTIN_PRESETS,
    GPT2_ARCHITECTURES,
    GPT2_MINI_HELDOUT_FAMILY,
    KNOWN_PRESETS,
    SHIPPED_PRESETS,
)
from lora_keras.quality import evaluate_heldout

ROOT = Path(__file__).resolve().parents[1]
RECORD = shipped_preset.shipped_record("gpt2_mini")
SPLIT = corpus_split(GPT2_MINI_HELDOUT_FAMILY)


def must_not_be_called(*args, **kwargs):
    raise AssertionError("gpt2_mini must load with no network")


@pytest.fixture(scope="module")
def offline_pair():
    """gpt2_mini pretrained and with random weights (seeded), both built with no network."""
    original = network.pretrained_reachable
    network.pretrained_reachable = must_not_be_called
    try:
        pretrained = load_gpt2("gpt2_mini", weights="pretrained")
        keras.utils.set_random_seed(0)
        random = load_gpt2("gpt2_mini", weights="random")
    finally:
        network.pretrained_reachable = original
    return pretrained, random


@pytest.mark.backends
def test_gpt2_mini_is_a_known_builtin_preset_that_ships_pretrained_weights():
    assert "gpt2_mini" in KNOWN_PRESETS and "gpt2_mini" in BUILTIN_PRESETS
    assert SHIPPED_PRESETS == ("gpt2_mini",)
    assert has_pretrained_weights("gpt2_mini") and has_pretrained_weights("gpt2_base_en")
    assert not has_pretrained_weights("gpt2_tiny") and not has_pretrained_weights("gpt3")
    assert RECORD["architecture"] == GPT2_ARCHITECTURES["gpt2_mini"]
    assert RECORD["heldout_family"] == GPT2_MINI_HELDOUT_FAMILY == "recipe"
    folder = shipped_preset.shipped_folder("gpt2_mini")
    names = sorted(path.name for path in folder.iterdir())
    assert names == ["backbone.weights.h5", "merges.txt", "pretraining.json", "vocabulary.json"]
    # A few MB, and shipped: pyproject's package data takes every file kind in the folder.
    assert (folder / "backbone.weights.h5").stat().st_size < 6_000_000
    package_data = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert '"*" = ["*.txt", "*.json", "*.h5"]' in package_data


@pytest.mark.backends
def test_pretrained_and_random_load_offline_with_the_same_shipped_tokenizer(offline_pair):
    pretrained, random = offline_pair
    for lm, weights in ((pretrained, "pretrained"), (random, "random")):
        assert isinstance(lm, keras_hub.models.GPT2CausalLM)
        assert lm.backbone.count_params() == 1_088_256
        assert lm.preprocessor.sequence_length == 128
        assert lm.preprocessor.tokenizer.vocabulary_size() == RECORD["tokenizer_tokens"] == 1678
        assert lm.provenance == {
            "preset": "gpt2_mini",
            "weights": weights,
            "tokenizer": "byte-level BPE shipped with gpt2_mini, 1,678 tokens (model vocabulary "
            "2,048), trained on its pretraining documents",
            "source": "builtin",
        }
    assert pretrained.preprocessor.tokenizer.vocabulary == random.preprocessor.tokenizer.vocabulary
    embeddings = [keras.ops.convert_to_numpy(lm.backbone.token_embedding.embeddings)
                  for lm in offline_pair]  # fmt: skip
    assert not np.allclose(*embeddings)


@pytest.mark.backends
def test_pretrained_halves_the_held_out_loss_of_random_weights(offline_pair):
    # The figures benchmarks/results/gpt2-mini/ records, on the first two batches of 16 here.
    pretrained, random = (
        evaluate_heldout(lm, SPLIT.keep_heldout, batch_size=16, max_batches=2)
        for lm in offline_pair
    )
    assert pretrained["tokens"] == random["tokens"] > 3000
    assert pretrained["loss"] <= 0.5 * random["loss"]


@pytest.mark.backends
def test_gpt2_mini_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match="sequence_length=257 is above the maximum of 'gpt2_mini'"):
        load_gpt2("gpt2_mini", sequence_length=257)
    lm = load_gpt2("gpt2_mini", sequence_length=256, dtype="bfloat16")
    assert lm.backbone.dtype_policy.name == "bfloat16"
    assert lm.preprocessor.sequence_length == 256


def test_the_shipped_tokenizer_is_what_the_script_trains():
    from lora_keras.models.pretrain_mini import pretraining_tokenizer

    vocabulary, merges = pretraining_tokenizer()
    folder = shipped_preset.shipped_folder("gpt2_mini")
    assert vocabulary == json.loads((folder / "vocabulary.json").read_text(encoding="utf-8"))
    assert merges == (folder / "merges.txt").read_text(encoding="utf-8").splitlines()


def test_the_scripts_first_steps_reproduce_the_recorded_losses():
    from lora_keras.models.pretrain_mini import SEED, pretrain_mini

    assert keras.backend.backend() == RECORD["environment"]["backend"] == "tensorflow"
    assert RECORD["seed"] == SEED and len(RECORD["losses"]) == RECORD["steps"]
    tokenizer = shipped_preset.shipped_tokenizer("gpt2_mini")
    # Eager: the script's own ops without the ~15 s of tracing a graph (here they match exactly).
    _, losses = pretrain_mini(tokenizer, steps=RECORD["steps"], stop_after=3, run_eagerly=True)
    # Another thread count may sum in another order: the same to a few parts in a million.
    np.testing.assert_allclose(losses, RECORD["losses"][:3], rtol=2e-5)
    assert losses[0] > losses[2]  # it is learning, so the check is not of a constant


def test_the_script_refuses_a_schedule_shorter_than_its_warm_up():
    from lora_keras.models.pretrain_mini import WARMUP_STEPS, pretrain_mini

    with pytest.raises(ValueError, match=f"steps must be above the {WARMUP_STEPS} warm-up steps"):
        pretrain_mini(None, steps=WARMUP_STEPS)
