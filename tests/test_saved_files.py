"""Files users saved with an earlier lora_keras keep loading, with the same outputs.

Each folder under tests/data/ was written by tests/data/make_saved_files.py with the lora_keras
version it is named after, and is never rewritten.
"""

import pathlib

import keras
import numpy as np
import pytest
from conftest import make_tiny_lm

import lora_keras as lk

pytestmark = pytest.mark.backends

BASE_WEIGHTS = pathlib.Path(__file__).parent / "data" / "tiny_gpt2_seed0.weights.h5"
SAVED = sorted(pathlib.Path(__file__).parent.joinpath("data").glob("saved_*"))
KERAS_FILES = [(folder, path.stem) for folder in SAVED for path in folder.glob("*.keras")]
ADAPTER_FILES = [
    (folder, path.name.removesuffix(".lora.h5")) for folder in SAVED for path in folder.glob("*.h5")
]


def _batch(outputs):
    token_ids = outputs["token_ids"]
    return {"token_ids": token_ids, "padding_mask": np.ones_like(token_ids, dtype="int32")}


def test_every_kind_of_file_is_kept():
    assert [folder.name for folder in SAVED] == ["saved_0_1_0"]
    assert {name for _, name in KERAS_FILES} == {
        "lora", "merged_lora", "dora", "nf4", "qlora", "mixlora", "mixdora_with_lora"
    }  # fmt: skip
    assert len(ADAPTER_FILES) == 5


@pytest.mark.parametrize(("folder", "name"), KERAS_FILES, ids=lambda v: getattr(v, "name", v))
def test_keras_file_loads_with_the_same_outputs(folder, name):
    outputs = np.load(folder / "outputs.npz")
    restored = keras.saving.load_model(folder / f"{name}.keras")
    logits = restored.predict(_batch(outputs), verbose=0)
    np.testing.assert_allclose(logits, outputs[name], atol=2e-5)


@pytest.mark.parametrize(("folder", "name"), ADAPTER_FILES, ids=lambda v: getattr(v, "name", v))
def test_adapter_file_loads_into_a_fresh_model_with_the_same_outputs(folder, name):
    outputs = np.load(folder / "outputs.npz")
    lm = make_tiny_lm()
    # The frozen base those files were trained on: the tests' tiny GPT-2 as TensorFlow seeds it
    # (another backend's initializers draw other weights from the same seed).
    lm.load_weights(BASE_WEIGHTS)
    lk.load_adapter(lm, str(folder / f"{name}.lora.h5"))
    logits = lm.predict(_batch(outputs), verbose=0)
    np.testing.assert_allclose(logits, outputs[name], atol=2e-5)


@pytest.mark.parametrize(("folder", "name"), KERAS_FILES, ids=lambda v: getattr(v, "name", v))
def test_a_loaded_old_file_saves_and_loads_again(folder, name, tmp_path):
    outputs = np.load(folder / "outputs.npz")
    keras.saving.load_model(folder / f"{name}.keras").save(tmp_path / "again.keras")
    logits = keras.saving.load_model(tmp_path / "again.keras").predict(_batch(outputs), verbose=0)
    np.testing.assert_allclose(logits, outputs[name], atol=2e-5)
