"""`load_gpt2` offline and online (simulated), the architecture table, the local tokenizer."""

import json
import re
import time

import keras
import keras_hub
import numpy as np
import pytest

from lora_keras import network
from lora_keras.data import embedded_corpus, load_texts
from lora_keras.models import (
    GPT2_ARCHITECTURES,
    KNOWN_PRESETS,
    architectures,
    load_gpt2,
    pretrained_reachable,
    tokenizer,
)
from lora_keras.models.tokenizer import END_OF_TEXT, local_gpt2_tokenizer

KERASHUB_PRESETS = tuple(p for p in KNOWN_PRESETS if p not in architectures.BUILTIN_PRESETS)


def gpt2_parameters(
    vocabulary_size, num_layers, num_heads, hidden_dim, intermediate_dim, max_sequence_length
):
    """GPT2Backbone's weight count, from its shape (checked against a built model below)."""
    h, f = hidden_dim, intermediate_dim
    attention = 4 * (h * h + h)  # query, key, value and output kernels and biases
    feedforward = 2 * h * f + f + h
    layer_norms = 2 * 2 * h
    embeddings = (vocabulary_size + max_sequence_length) * h
    return embeddings + num_layers * (attention + feedforward + layer_norms) + 2 * h


def must_not_be_called(*args, **kwargs):
    raise AssertionError("called where it must not be")


@pytest.fixture(scope="module", autouse=True)
def cache(tmp_path_factory):
    """Trained tokenizers go to a temporary folder, never to the user's cache."""
    with pytest.MonkeyPatch.context() as patch:
        folder = tmp_path_factory.mktemp("cache")
        patch.setenv("LORA_KERAS_CACHE", str(folder))
        yield folder


@pytest.fixture(scope="module")
def tiny_preset(cache, tmp_path_factory):
    """A 2-layer, 64-wide GPT-2 saved with `save_to_preset`, and its logits on a fixed input."""
    tokens, _ = local_gpt2_tokenizer(embedded_corpus()[:100], 512)
    lm = keras_hub.models.GPT2CausalLM(
        backbone=keras_hub.models.GPT2Backbone(
            vocabulary_size=512,
            num_layers=2,
            num_heads=2,
            hidden_dim=64,
            intermediate_dim=128,
            max_sequence_length=64,
        ),
        preprocessor=keras_hub.models.GPT2CausalLMPreprocessor(tokens, sequence_length=16),
    )
    folder = tmp_path_factory.mktemp("preset") / "tiny"
    lm.save_to_preset(str(folder))
    x, _, _ = lm.preprocessor(["The weather in Fenwick is grey."])
    return folder, x, keras.ops.convert_to_numpy(lm(x))


def test_table_matches_kerashub_preset_metadata():
    assert set(KNOWN_PRESETS) == {"gpt2_tiny", "gpt2_mini", *KERASHUB_PRESETS}
    for preset in KERASHUB_PRESETS:
        architecture = GPT2_ARCHITECTURES[preset]
        metadata = keras_hub.models.GPT2Backbone.presets[preset]["metadata"]
        assert gpt2_parameters(**architecture) == metadata["params"], preset
        assert metadata["description"].startswith(f"{architecture['num_layers']}-layer"), preset


def test_gpt2_tiny_random_is_built_offline_and_says_so():
    lm = load_gpt2("gpt2_tiny", weights="random", dtype="bfloat16")
    assert isinstance(lm, keras_hub.models.GPT2CausalLM)
    assert lm.backbone.dtype_policy.name == "bfloat16"
    assert lm.backbone.count_params() == gpt2_parameters(**GPT2_ARCHITECTURES["gpt2_tiny"])
    assert lm.preprocessor.sequence_length == 128
    assert lm.preprocessor.tokenizer.vocabulary_size() <= 4096
    assert json.loads(json.dumps(lm.provenance)) == {
        "preset": "gpt2_tiny",
        "weights": "random",
        "tokenizer": lm.provenance["tokenizer"],
        "source": "builtin",
    }
    assert re.match(
        r"local byte-level BPE, [\d,]+ tokens \(model vocabulary 4,096\), trained on the "
        r"embedded corpus \(cached at .+\)$",
        lm.provenance["tokenizer"],
    )


@pytest.mark.large
def test_gpt2_base_en_random_has_the_real_shape():
    lm = load_gpt2("gpt2_base_en", weights="random")
    assert lm.backbone.count_params() == 124_439_808
    assert lm.backbone.vocabulary_size == 50_257
    assert lm.provenance["source"] == "kerashub"


def test_local_preset_round_trip(tiny_preset):
    folder, x, logits = tiny_preset
    lm = load_gpt2(folder, sequence_length=24)
    assert lm.preprocessor.sequence_length == 24
    np.testing.assert_allclose(keras.ops.convert_to_numpy(lm(x)), logits, atol=1e-6)
    assert lm.provenance == {
        "preset": str(folder),
        "weights": "pretrained",
        "tokenizer": f"tokenizer saved in {folder}",
        "source": "local_folder",
    }
    fresh = load_gpt2(folder, weights="random", sequence_length=16)
    assert not np.allclose(keras.ops.convert_to_numpy(fresh(x)), logits)
    with pytest.raises(ValueError, match="sequence_length=65 is above the maximum of .*tiny"):
        load_gpt2(folder, sequence_length=65)


def test_tiny_model_trains_one_step_and_generates_as_in_the_tutorial(tiny_preset):
    lm = load_gpt2(tiny_preset[0], sequence_length=32)
    # Tracing a train step costs ~15 s on two CPU cores; what is tested here is the text path.
    lm.compile(run_eagerly=True)
    before = keras.ops.convert_to_numpy(lm.backbone.token_embedding.embeddings)
    history = lm.fit(load_texts("embedded").take(2).batch(2), verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert not np.allclose(
        keras.ops.convert_to_numpy(lm.backbone.token_embedding.embeddings), before
    )
    assert lm.generate("I like basketball").startswith("I like basketball")


def test_offline_pretrained_fails_fast_and_names_the_offline_path(monkeypatch):
    def unreachable(address, timeout):
        raise OSError("Network is unreachable")

    monkeypatch.delenv("KAGGLE_API_ENVIRONMENT", raising=False)
    monkeypatch.setattr(network.socket, "create_connection", unreachable)
    monkeypatch.setattr(keras_hub.models.GPT2CausalLM, "from_preset", must_not_be_called)
    start = time.monotonic()
    with pytest.raises(ConnectionError, match="Cannot reach api.kaggle.com:443") as error:
        load_gpt2("gpt2_base_en")
    assert "load_gpt2('gpt2_base_en', weights='random')" in str(error.value)
    assert time.monotonic() - start < 1


def test_online_pretrained_is_the_kerashub_preset(tiny_preset, monkeypatch):
    calls, load = [], keras_hub.models.GPT2CausalLM.from_preset

    def from_preset(preset, **kwargs):
        # Stands in for the download with the tiny preset folder.
        calls.append((preset, kwargs))
        return load(str(tiny_preset[0]))

    monkeypatch.setattr(network, "pretrained_reachable", lambda: True)
    monkeypatch.setattr(keras_hub.models.GPT2CausalLM, "from_preset", from_preset)
    lm = load_gpt2("gpt2_base_en", sequence_length=32, dtype="bfloat16")
    assert calls == [("gpt2_base_en", {"dtype": "bfloat16"})]
    assert lm.preprocessor.sequence_length == 32
    assert lm.provenance == {
        "preset": "gpt2_base_en",
        "weights": "pretrained",
        "tokenizer": "gpt2_base_en pretrained BPE from KerasHub",
        "source": "kerashub",
    }


def test_pretrained_reachable_never_waits_past_its_timeout(monkeypatch):
    class Connection:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(network.socket, "create_connection", lambda address, timeout: Connection())
    assert pretrained_reachable()

    def hang(address, timeout):
        time.sleep(1)
        raise OSError("timed out")

    monkeypatch.setattr(network.socket, "create_connection", hang)
    start = time.monotonic()
    assert not pretrained_reachable(timeout=0.2)
    assert time.monotonic() - start < 1


def test_download_host_is_the_one_kagglehub_uses(monkeypatch):
    monkeypatch.delenv("KAGGLE_API_ENVIRONMENT", raising=False)
    assert network.download_host() == ("api.kaggle.com", 443)


def test_bad_arguments_are_refused_before_any_download(monkeypatch):
    monkeypatch.setattr(network, "pretrained_reachable", must_not_be_called)
    with pytest.raises(ValueError, match="Unknown preset 'gpt3'. Known presets: gpt2_tiny, gpt2_"):
        load_gpt2("gpt3")
    with pytest.raises(ValueError, match="weights must be 'pretrained' or 'random'"):
        load_gpt2("gpt2_tiny", weights="zeros")
    with pytest.raises(ValueError, match="sequence_length=2048 is above the maximum of 'gpt2_"):
        load_gpt2("gpt2_base_en", sequence_length=2048)
    with pytest.raises(ValueError, match="'gpt2_tiny' is this package's own architecture and"):
        load_gpt2("gpt2_tiny", weights="pretrained")


def test_local_tokenizer_round_trips_text_and_ends_with_end_of_text(cache):
    texts = embedded_corpus()[:50]
    tokens, folder = local_gpt2_tokenizer(texts, 400)
    assert folder.parent == cache / "tokenizers"
    assert tokens.vocabulary_size() == 400
    assert tokens.token_to_id(END_OF_TEXT) == 399 == tokens.end_token_id
    text = "Weather for Fenwick: 12 degrees, ünïcode and 🙂 too!"
    assert tokens.detokenize(tokens(text)) == text


def test_local_tokenizer_is_trained_once_and_cached(tmp_path, monkeypatch):
    texts = ["Dear Maya, greetings from Velmora.", "The final score was 3 to 1."]
    first, folder = local_gpt2_tokenizer(texts, 300)
    monkeypatch.setattr(tokenizer, "train_bpe", must_not_be_called)
    # The same texts as a dataset find the same cache entry, with no training.
    (tmp_path / "two.txt").write_text("\n\n".join(texts), encoding="utf-8")
    again, same = local_gpt2_tokenizer(load_texts(str(tmp_path / "two.txt")), 300)
    assert same == folder and again.vocabulary == first.vocabulary
    assert sorted(path.name for path in folder.iterdir()) == ["merges.txt", "vocabulary.json"]
    with pytest.raises(ValueError, match="Cannot train a tokenizer on no text"):
        local_gpt2_tokenizer([], 300)


@pytest.mark.parametrize(
    "length, message",
    [(0, "sequence_length must be at least 1 token, got 0"), (True, "must be an integer")],
)
def test_a_bad_sequence_length_is_refused_before_any_build(length, message):
    with pytest.raises(ValueError, match=message):
        load_gpt2("gpt2_tiny", weights="random", sequence_length=length)
