"""A multi-adapter model saved before it had its per-adapter loss metric keeps loading."""

import pathlib

import numpy as np
import pytest

import lora_keras as lk

pytestmark = pytest.mark.backends

FOLDER = pathlib.Path(__file__).parent / "data" / "multi_lora_before_metrics"


def test_a_multi_adapter_file_from_before_the_metric_loads_with_the_same_outputs():
    outputs = np.load(FOLDER / "outputs.npz")
    lm = lk.load_model(FOLDER / "multi_lora.keras")
    assert lk.adapter_names(lm) == ["small", "big"]
    token_ids = outputs["token_ids"]
    x = {
        "token_ids": token_ids,
        "padding_mask": np.ones_like(token_ids),
        "adapter_ids": np.array([0, 1], "int32"),
    }
    np.testing.assert_allclose(lm.predict(x, verbose=0), outputs["logits"], atol=2e-5)
    logs = lm.evaluate(x, token_ids, verbose=0, return_dict=True)  # it gained the metric
    assert {"loss_small", "loss_big"} <= set(logs)
