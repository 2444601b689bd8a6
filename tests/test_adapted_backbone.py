"""The one adapted backbone: a section per method in its config, and its class set in one place."""

import pathlib
import subprocess
import sys

import keras
import keras_hub
import pytest

import lora_keras as lk
from lora_keras import gpt2_surgery

SAVED = pathlib.Path(__file__).parent / "data" / "saved_0_1_0"


def test_every_method_records_its_section_and_unwrapping_gives_kerashubs_class(tiny_lm):
    lk.quantize_nf4(tiny_lm)
    assert type(tiny_lm.backbone) is lk.AdaptedGPT2Backbone
    lk.apply_lora(tiny_lm, rank=2)
    config = tiny_lm.backbone.get_config()
    assert config["nf4"] == {"block_size": 64, "double_quant": True}
    assert config["lora"]["rank"] == 2 and config["lora"]["merged_layers"] == []
    lk.dequantize_nf4(tiny_lm)
    assert "nf4" not in tiny_lm.backbone.get_config()
    assert type(tiny_lm.backbone) is lk.AdaptedGPT2Backbone
    lk.unwrap_lora(tiny_lm)
    assert type(tiny_lm.backbone) is keras_hub.models.GPT2Backbone


def test_mixlora_and_lora_sections_side_by_side(tiny_lm):
    lk.apply_mixlora(tiny_lm, num_experts=2, top_k=1, rank=2)
    lk.apply_lora(tiny_lm, rank=2)
    config = tiny_lm.backbone.get_config()
    assert config["mixlora"]["num_experts"] == 2 and config["lora"]["targets"] == [
        "query",
        "value",
    ]
    clone = lk.AdaptedGPT2Backbone.from_config(config)
    assert type(clone) is lk.AdaptedGPT2Backbone
    assert set(lk.lora_layers(clone)) == set(lk.lora_layers(tiny_lm))
    assert set(lk.mixlora_layers(clone)) == set(lk.mixlora_layers(tiny_lm))


def test_an_unknown_section_name_is_refused():
    with pytest.raises(ValueError, match="Unknown section 'prefix'; known sections: nf4, lora"):
        gpt2_surgery.register_section("prefix", lambda backbone: None, lambda b, s: None)


def test_a_section_whose_method_is_not_loaded_names_the_call_that_loads_it(tiny_lm, monkeypatch):
    lk.apply_mixlora(tiny_lm, num_experts=2, top_k=1, rank=2)
    config = tiny_lm.backbone.get_config()
    monkeypatch.delitem(gpt2_surgery.adapted_backbone._SECTIONS, "mixlora")
    with pytest.raises(
        ValueError, match=r"saved with lora_keras's mixlora.*lk\.load_model\(path\)"
    ):
        lk.AdaptedGPT2Backbone.from_config(config)


def test_old_class_names_load_under_their_name():
    restored = keras.saving.load_model(SAVED / "mixlora.keras")
    assert type(restored.backbone) is lk.MixLoraGPT2Backbone
    assert isinstance(restored.backbone, lk.AdaptedGPT2Backbone)
    # A method applied afterwards keeps it: its weights stay filed under that name.
    lk.apply_lora(restored, rank=2)
    assert type(restored.backbone) is lk.MixLoraGPT2Backbone


def _run(script):
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.split()


@pytest.mark.large
def test_every_variant_loads_whatever_was_imported_first():
    names = ["lora", "dora", "nf4", "qlora", "mixlora", "mixdora_with_lora"]
    paths = [str(SAVED / f"{name}.keras") for name in names]
    # Keras first, then lora_keras: `keras.saving.load_model` finds every class and section.
    keras_first = f"import keras, lora_keras\nfor p in {paths!r}:\n    keras.saving.load_model(p)"
    # lora_keras first (Keras not loaded yet): `lk.load_model` is the one documented call.
    lk_first = f"import lora_keras as lk\nfor p in {paths!r}:\n    lk.load_model(p)"
    for script in (keras_first, lk_first):
        assert _run(script + "\nprint('loaded')")[-1:] == ["loaded"]
