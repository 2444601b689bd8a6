"""`weights="pretrained"` offline: a preset kagglehub already holds loads from its cache."""

import subprocess
import sys

import keras
import keras_hub
import numpy as np
import pytest
from conftest import token_batch

from lora_keras import network
from lora_keras.experiments.compare import choose_weights
from lora_keras.models import load_gpt2, preset_cache
from lora_keras.models.preset_cache import cached_preset_folder
from lora_keras.models.tokenizer import local_gpt2_tokenizer

# Where kagglehub keeps gpt2_base_en (KerasHub's handle keras/gpt2/keras/gpt2_base_en/3).
CACHED = ("models", "keras", "gpt2", "keras", "gpt2_base_en", "3")


@pytest.fixture
def offline(monkeypatch, tmp_path):
    def unreachable(address, timeout):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(network.socket, "create_connection", unreachable)
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "kagglehub"))
    monkeypatch.setenv("LORA_KERAS_CACHE", str(tmp_path / "lora_keras"))
    return tmp_path / "kagglehub"


def fake_download(cache):
    """Writes a small GPT-2 where kagglehub would have put gpt2_base_en; returns its logits."""
    tokenizer, _ = local_gpt2_tokenizer(["A small corpus.", "Two documents here."], 300)
    lm = keras_hub.models.GPT2CausalLM(
        backbone=keras_hub.models.GPT2Backbone(
            vocabulary_size=300,
            num_layers=1,
            num_heads=2,
            hidden_dim=16,
            intermediate_dim=32,
            max_sequence_length=64,
        ),
        preprocessor=keras_hub.models.GPT2CausalLMPreprocessor(tokenizer, sequence_length=16),
    )
    folder = cache.joinpath(*CACHED)
    lm.save_to_preset(str(folder))
    x = token_batch(sequence_length=8)
    return folder, keras.ops.convert_to_numpy(lm(x)), x


def test_a_preset_in_the_kagglehub_cache_loads_with_no_network(offline):
    assert cached_preset_folder("gpt2_base_en") is None
    folder, logits, x = fake_download(offline)
    assert cached_preset_folder("gpt2_base_en") == str(folder)
    assert choose_weights("gpt2_base_en", None) == (
        "pretrained",
        "kagglehub's cache already holds the preset",
    )
    lm = load_gpt2("gpt2_base_en", sequence_length=32)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(lm(x)), logits, atol=1e-6)
    assert lm.preprocessor.sequence_length == 32
    assert lm.provenance["weights"] == "pretrained"
    assert lm.provenance["tokenizer"] == (
        f"gpt2_base_en pretrained BPE from the kagglehub cache ({folder})"
    )


def test_an_incomplete_cache_is_not_taken_for_the_preset(offline):
    offline.joinpath(*CACHED).mkdir(parents=True)  # a download that never wrote config.json
    assert cached_preset_folder("gpt2_base_en") is None
    with pytest.raises(ConnectionError, match="Cannot reach"):
        load_gpt2("gpt2_base_en")


def test_the_handles_are_kerashubs_read_without_importing_it(monkeypatch):
    registry = keras_hub.models.GPT2CausalLM.presets
    assert preset_cache.gpt2_kaggle_handles() == {
        name: metadata["kaggle_handle"] for name, metadata in registry.items()
    }
    script = (
        "import sys; from lora_keras.models.preset_cache import cached_preset_folder; "
        "cached_preset_folder('gpt2_base_en'); "
        "print(sorted({'keras_hub', 'tensorflow'} & set(sys.modules)))"
    )
    started = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert started.stdout.strip() == "[]", started.stderr
    # Were the table to move inside KerasHub, the registry answers.
    monkeypatch.setattr(preset_cache, "_GPT2_PRESETS", ("moved", "gpt2_presets.py"))
    assert (
        preset_cache.gpt2_kaggle_handles()["gpt2_base_en"]
        == (registry["gpt2_base_en"]["kaggle_handle"])
    )
