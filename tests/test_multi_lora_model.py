"""Several adapters on one frozen GPT-2: each sequence gets its own, as if alone in its model."""

import keras
import numpy as np
import pytest
from conftest import make_tiny_lm, next_token_dataset
from keras.ops import convert_to_numpy as to_numpy

import lora_keras as lk
from lora_keras.gpt2_surgery import MultiAdapterGPT2CausalLM, multi_lora_layers
from lora_keras.multi_lora import (
    adapter_losses,
    adapter_names,
    adapter_sample_weight,
    apply_multi_lora,
)

# Portable: CI runs these under JAX and torch too (`-m backends`).
pytestmark = pytest.mark.backends

ADAPTERS = {"small": {"rank": 2, "alpha": 8.0}, "big": {"rank": 4, "alpha": 16.0}}
IDS = np.array([1, 0, 1, 0], "int32")


def of(k, ids=IDS):
    """Which rows of a batch use adapter `k`."""
    return ids == k


def randomize(lm, seed=0):
    """Random A and B on each adapter's own rank (padding left at zero)."""
    rng = np.random.default_rng(seed)
    for layer in multi_lora_layers(lm).values():
        for k, adapter in enumerate(layer.adapters):
            r = adapter["rank"]
            own = layer.get_adapter(k)
            weights = {n: rng.normal(0, 0.1, w.shape).astype("float32") for n, w in own.items()}
            assert weights["lora_kernel_a"].shape[-1] == r
            layer.set_adapter(k, weights, r, adapter["alpha"])


def multi_lm(seed=0, dtype=None, adapters=ADAPTERS, **kwargs):
    lm = make_tiny_lm(seed=seed, dtype=dtype)
    apply_multi_lora(lm, adapters, **kwargs)
    randomize(lm, seed)
    return lm


def batch(ids=IDS, seed=0):
    x, y = next_token_dataset(batch_size=len(ids), seed=seed)
    return {**x, "adapter_ids": ids}, y


def alone(name, source, tmp_path, seed=0, dtype=None):
    """A plain `apply_lora` model of the same base holding adapter `name` of `source`."""
    path = tmp_path / f"{name}.lora.h5"
    lk.save_adapter(source, path, adapter=name)
    plain = make_tiny_lm(seed=seed, dtype=dtype)
    lk.load_adapter(plain, path)
    return plain


def plain_inputs(x):
    return {key: value for key, value in x.items() if key != "adapter_ids"}


def test_apply_names_adapters_and_trains_only_their_factors():
    lm = make_tiny_lm()
    wrappers = apply_multi_lora(lm, ADAPTERS, targets=("query", "value", "ffn_in"))
    assert isinstance(lm, MultiAdapterGPT2CausalLM)
    assert adapter_names(lm) == ["small", "big"]
    assert len(wrappers) == 2 * 3
    trainable = {id(v) for w in wrappers for v in (w.lora_kernel_a, w.lora_kernel_b)}
    assert {id(v) for v in lm.trainable_weights} == trainable
    query = multi_lora_layers(lm)["transformer_layer_0/query"]
    assert tuple(query.lora_kernel_a.shape) == (2, 64, 4)  # (adapters, hidden, padded rank)
    assert tuple(query.lora_kernel_b.shape) == (2, 4, 4, 16)  # (adapters, rank, heads, head)
    x, _ = batch()
    base = to_numpy(make_tiny_lm()(plain_inputs(x)))
    np.testing.assert_allclose(to_numpy(lm(x)), base, rtol=1e-6, atol=1e-6)  # B starts at 0


def test_each_sequence_equals_its_adapter_alone_in_its_own_model(tmp_path):
    lm = multi_lm()
    x, _ = batch()
    out = to_numpy(lm(x))
    base = to_numpy(make_tiny_lm()(plain_inputs(x)))
    for k, name in enumerate(adapter_names(lm)):
        single = to_numpy(alone(name, lm, tmp_path)(plain_inputs(x)))
        np.testing.assert_allclose(out[of(k)], single[of(k)], rtol=1e-5, atol=1e-5)
        assert not np.allclose(out[of(k)], base[of(k)], atol=1e-3)  # not trivially


def test_changing_one_adapter_leaves_the_others_sequences_alone():
    lm = multi_lm()
    x, _ = batch()
    before = to_numpy(lm(x))
    for layer in multi_lora_layers(lm).values():
        b = to_numpy(layer.lora_kernel_b).copy()
        b[1] += 1.0
        layer.lora_kernel_b.assign(b)
    after = to_numpy(lm(x))
    np.testing.assert_array_equal(after[of(0)], before[of(0)])
    assert not np.allclose(after[of(1)], before[of(1)])


def test_an_adapter_without_examples_gets_no_update():
    """Zero gradient: plain SGD leaves it exactly as it was (momentum or weight decay would
    still move it, as they move any weight whose gradient is zero)."""
    lm = multi_lm()
    x, y = batch(ids=np.array([1, 1], "int32"))
    lm.compile(
        optimizer=keras.optimizers.SGD(0.5),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    layers = list(multi_lora_layers(lm).values())
    before = [to_numpy(w).copy() for layer in layers for w in layer.adapter_weights().values()]
    lm.fit(x, y, epochs=2, batch_size=2, verbose=0)
    after = [to_numpy(w) for layer in layers for w in layer.adapter_weights().values()]
    for old, new in zip(before, after, strict=True):
        np.testing.assert_array_equal(new[0], old[0])
        assert not np.array_equal(new[1], old[1])


@pytest.mark.parametrize(
    "optimizer",
    [lambda: keras.optimizers.SGD(0.5), lambda: keras.optimizers.AdamW(1e-2, weight_decay=0.1)],
    ids=["sgd", "adamw"],
)
def test_training_together_equals_training_each_alone(tmp_path, optimizer):
    """With `adapter_sample_weight`, each adapter's steps are its separate run's: Adam too,
    whose per-element state would differ if the stacked weights' gradient were sparse."""
    lm = multi_lm()
    ids = np.array([1, 0, 1, 1], "int32")  # unequal shares: 1 example of small, 3 of big
    x, y = batch(ids=ids, seed=3)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    singles = {name: alone(name, lm, tmp_path) for name in adapter_names(lm)}
    lm.compile(optimizer=optimizer(), loss=loss)
    weights = adapter_sample_weight(ids, x["padding_mask"])
    together = [lm.train_on_batch(x, y, sample_weight=weights) for _ in range(3)]
    for k, single in enumerate(singles.values()):
        single.compile(optimizer=optimizer(), loss=loss)
        own = plain_inputs({key: value[ids == k] for key, value in x.items()})
        for _ in range(3):
            single.train_on_batch(own, y[ids == k])
        for path, layer in multi_lora_layers(lm).items():
            trained = layer.get_adapter(k)
            theirs = lk.lora_layers(single)[path]
            for weight in ("lora_kernel_a", "lora_kernel_b"):
                np.testing.assert_allclose(
                    trained[weight], to_numpy(getattr(theirs, weight)), rtol=1e-4, atol=1e-5
                )
    assert together[-1] < together[0]
    losses = adapter_losses(lm, x, y)
    assert set(losses) == {"small", "big"}
    own = plain_inputs({key: value[ids == 0] for key, value in x.items()})
    expected = singles["small"].evaluate(own, y[ids == 0], verbose=0, return_dict=True)["loss"]
    np.testing.assert_allclose(losses["small"], expected, rtol=1e-4)


def test_fit_and_predict_take_adapter_ids():
    lm = multi_lm()
    x, y = batch()
    lm.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    history = lm.fit(x, y, epochs=2, batch_size=2, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    np.testing.assert_allclose(to_numpy(lm.predict(x, verbose=0)), to_numpy(lm(x)), atol=1e-5)


def test_half_precision_frozen_model(tmp_path):
    lm = multi_lm(dtype="bfloat16")
    layer = multi_lora_layers(lm)["transformer_layer_0/query"]
    assert layer.original_layer.kernel.dtype == "bfloat16"
    assert layer.lora_kernel_a.dtype == "float32"
    x, _ = batch()
    out = to_numpy(lm(x)).astype("float32")
    for k, name in enumerate(adapter_names(lm)):
        single = alone(name, lm, tmp_path, dtype="bfloat16")
        expected = to_numpy(single(plain_inputs(x))).astype("float32")
        np.testing.assert_allclose(out[of(k)], expected[of(k)], rtol=0.05, atol=0.05)


def test_nf4_base(tmp_path):
    lm = make_tiny_lm()
    lk.quantize_nf4(lm)
    apply_multi_lora(lm, ADAPTERS)
    randomize(lm)
    x, _ = batch()
    out = to_numpy(lm(x))
    for k, name in enumerate(adapter_names(lm)):
        path = tmp_path / f"{name}.lora.h5"
        lk.save_adapter(lm, path, adapter=name)
        single = make_tiny_lm()
        lk.quantize_nf4(single)
        lk.load_adapter(single, path)
        expected = to_numpy(single(plain_inputs(x)))
        np.testing.assert_allclose(out[of(k)], expected[of(k)], rtol=1e-5, atol=1e-5)
    restored = lk.load_model(_saved(lm, tmp_path))
    np.testing.assert_allclose(to_numpy(restored(x)), out, rtol=1e-6, atol=1e-6)
    lk.dequantize_nf4(lm)  # the adapters stay, around float kernels
    assert len(multi_lora_layers(lm)) == 4
    np.testing.assert_allclose(to_numpy(lm(x)), out, rtol=1e-4, atol=1e-4)


def _saved(lm, tmp_path):
    path = tmp_path / "multi.keras"
    lm.save(path)
    return path


def test_keras_round_trip(tmp_path):
    lm = multi_lm()
    x, _ = batch()
    restored = lk.load_model(_saved(lm, tmp_path))
    assert isinstance(restored, MultiAdapterGPT2CausalLM)
    assert adapter_names(restored) == ["small", "big"]
    np.testing.assert_allclose(to_numpy(restored(x)), to_numpy(lm(x)), rtol=1e-6, atol=1e-6)
