"""Several adapters train under the memory levers as under the plain loss: chunked loss, remat."""

import keras
import numpy as np
import pytest
from conftest import make_tiny_lm
from keras.ops import convert_to_numpy as to_numpy
from test_multi_lora_model import batch, multi_lm

import lora_keras as lk
from lora_keras.levers.options import LOSS_TOLERANCE, rematerialise_blocks
from lora_keras.multi_lora import adapter_sample_weight

# Portable: CI runs these under JAX and torch too (`-m backends`).
pytestmark = pytest.mark.backends

IDS = np.array([1, 0, 1, 1], "int32")  # uneven, so the per-adapter weights matter


def trained(model, lm, steps=2):
    """The adapters' weights after `steps` SGD steps of `model` on one mixed batch."""
    x, y = batch(IDS)
    weights = adapter_sample_weight(x["adapter_ids"], x["padding_mask"])
    for _ in range(steps):
        model.train_on_batch(x, y, sample_weight=weights)
    return [np.asarray(to_numpy(v)) for v in lm.trainable_variables]


@pytest.mark.parametrize("remat", [False, True], ids=["chunked", "chunked+remat"])
def test_chunked_loss_trains_several_adapters_as_the_plain_loss(remat):
    lm = multi_lm()
    before = [np.asarray(to_numpy(v)) for v in lm.trainable_variables]
    lm.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    plain = trained(lm, lm)
    levered = multi_lm()
    if remat:  # after the adapters: it wraps the blocks they are in
        rematerialise_blocks(levered.backbone)
    chunked = lk.ChunkedLossCausalLM(levered.backbone, chunk_size=5)  # 12 positions: 5, 5, 2
    chunked.compile(optimizer="sgd")
    ours = trained(chunked, levered)
    assert len(ours) == 8  # A and B of query and value in 2 blocks
    for start, a, b in zip(before, plain, ours, strict=True):
        assert np.abs(a - start).max() > 0  # the test cannot pass on weights that never moved
        np.testing.assert_allclose(b, a, rtol=LOSS_TOLERANCE["chunked_loss"], atol=1e-7)


def test_chunked_loss_refuses_adapter_ids_without_adapters():
    lm = multi_lm()
    x, _ = batch(IDS)
    plain = lk.ChunkedLossCausalLM(make_tiny_lm().backbone)
    with pytest.raises(ValueError, match="this backbone holds no named adapters"):
        plain(x)
    hidden = lk.ChunkedLossCausalLM(lm.backbone)(x)
    assert tuple(hidden.shape)[:2] == x["token_ids"].shape


def test_remat_alone_trains_several_adapters_as_without_it():
    lm = multi_lm()
    lm.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    plain = trained(lm, lm)
    levered = multi_lm()
    rematerialise_blocks(levered.backbone)  # the ids must outlive the forward pass
    levered.compile(
        optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    for a, b in zip(plain, trained(levered, levered), strict=True):
        np.testing.assert_allclose(b, a, rtol=LOSS_TOLERANCE["remat"], atol=1e-7)
