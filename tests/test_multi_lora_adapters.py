"""One adapter of many to and from single-adapter files, and what a multi-adapter model refuses."""

import numpy as np
import pytest
from conftest import make_tiny_backbone, make_tiny_lm, randomize_lora_b
from keras.ops import convert_to_numpy as to_numpy
from test_multi_lora_model import ADAPTERS, IDS, batch, multi_lm, of, plain_inputs

import lora_keras as lk
from lora_keras.gpt2_surgery import multi_lora_layers
from lora_keras.multi_lora import adapter_names, apply_multi_lora

# Portable: CI runs these under JAX and torch too (`-m backends`).
pytestmark = pytest.mark.backends


def plain_adapter(tmp_path, rank, targets=("query", "value"), alpha=4.0, seed=1):
    """A file written by a plain `apply_lora` model, and that model."""
    lm = make_tiny_lm()
    randomize_lora_b(lk.apply_lora(lm, rank=rank, alpha=alpha, targets=targets), seed=seed)
    path = tmp_path / f"plain_{rank}_{seed}.lora.h5"
    lk.save_adapter(lm, path)
    return path, lm


def ranks(lm):
    return [a["rank"] for a in multi_lora_layers(lm)["transformer_layer_1/value"].adapters]


def weights_of(lm):
    return [to_numpy(w).copy() for w in lm.weights]


def test_single_adapter_files_load_into_named_adapters(tmp_path):
    lm = multi_lm()
    x, _ = batch()
    small_path, small = plain_adapter(tmp_path, rank=1, seed=1)  # rank 1 into a rank-2 slot
    big_path, big = plain_adapter(tmp_path, rank=3, alpha=2.0, seed=2)  # padded rank is 4
    assert lk.load_adapter(lm, small_path, adapter="small")["rank"] == 1
    lk.load_adapter(lm, big_path, adapter="big")
    out = to_numpy(lm(x))
    for k, single in enumerate((small, big)):
        expected = to_numpy(single(plain_inputs(x)))
        np.testing.assert_allclose(out[of(k)], expected[of(k)], rtol=1e-5, atol=1e-5)
    # The adapters keep the files' ranks, and save back to the same files' contents.
    again = tmp_path / "again.lora.h5"
    lk.save_adapter(lm, again, adapter="big")
    fresh = make_tiny_lm()
    lk.load_adapter(fresh, again)
    expected = to_numpy(big(plain_inputs(x)))
    np.testing.assert_allclose(to_numpy(fresh(plain_inputs(x))), expected, rtol=1e-5, atol=1e-5)
    # The padding beyond each adapter's rank is zero, and the model saves and loads as .keras.
    layer = multi_lora_layers(lm)["transformer_layer_0/query"]
    assert not to_numpy(layer.lora_kernel_a)[0, :, 1:].any()
    path = tmp_path / "multi.keras"
    lm.save(path)
    restored = lk.load_model(path)
    assert ranks(restored) == [1, 3]
    np.testing.assert_allclose(to_numpy(restored(x)), out, rtol=1e-6, atol=1e-6)


def test_files_that_do_not_fit_are_refused_and_change_nothing(tmp_path):
    lm = multi_lm()
    before = weights_of(lm)
    too_big, _ = plain_adapter(tmp_path, rank=5)
    other_targets, _ = plain_adapter(tmp_path, rank=2, targets=("query", "key"))
    cases = [
        (too_big, "big", "larger than this model's padded rank 4"),
        (other_targets, "small", "Wrong targets"),
        (too_big, "nobody", "Unknown adapter 'nobody'"),
        (too_big, None, "name the one to load with `adapter=NAME`"),
    ]
    for path, name, message in cases:
        with pytest.raises(ValueError, match=message):
            lk.load_adapter(lm, path, adapter=name)
    for old, new in zip(before, weights_of(lm), strict=True):
        np.testing.assert_array_equal(new, old)
    assert ranks(lm) == [2, 4]


def test_save_and_load_name_an_adapter_only_where_there_are_several(tmp_path):
    lm = multi_lm()
    with pytest.raises(ValueError, match="name the one to save"):
        lk.save_adapter(lm, tmp_path / "a.lora.h5")
    with pytest.raises(ValueError, match="Unknown adapter 'x'"):
        lk.save_adapter(lm, tmp_path / "a.lora.h5", adapter="x")
    path, plain = plain_adapter(tmp_path, rank=2)
    with pytest.raises(ValueError, match="holds no named adapters"):
        lk.save_adapter(plain, tmp_path / "b.lora.h5", adapter="small")
    with pytest.raises(ValueError, match="holds no named adapters"):
        lk.load_adapter(make_tiny_lm(), path, adapter="small")


def test_bad_settings_are_refused_and_change_nothing():
    cases = [
        ({}, "non-empty dict"),
        ({"a": {"rank": 0}}, "rank must be an integer"),
        ({"a": {"rank": 2.5}}, "rank must be an integer"),
        ({"a": {"alpha": 0.0}}, "alpha must be a finite number above 0"),
        ({"a": {"rank": 99}}, "larger than the smallest dimension"),
        ({"a": {"variant": "dora"}}, "only 'lora'"),
        ({"a": {"dropout": 0.1}}, "unknown settings"),
    ]
    for adapters, message in cases:
        lm = make_tiny_lm()
        before = weights_of(lm)
        with pytest.raises(ValueError, match=message):
            apply_multi_lora(lm, adapters)
        assert type(lm).__name__ == "GPT2CausalLM"
        assert all(w.trainable for w in lm.backbone.weights)
        for old, new in zip(before, weights_of(lm), strict=True):
            np.testing.assert_array_equal(new, old)


def test_what_cannot_go_with_several_adapters_is_refused(tmp_path):
    lm = multi_lm()
    with pytest.raises(ValueError, match="apply_multi_lora once"):
        apply_multi_lora(lm, ADAPTERS)
    for call, message in [
        (lambda: lk.apply_lora(lm), "one adapter or several"),
        (lambda: lk.merge_lora(lm), "no single update to fold"),
        (lambda: lk.unwrap_lora(lm), "no single update to fold"),
        (lambda: lk.apply_mixlora(lm), "MixLoRA beside several adapters"),
        (lambda: lk.quantize_nf4(lm), "QLoRA quantizes the frozen base first"),
    ]:
        with pytest.raises(ValueError, match=message):
            call()
    assert len(multi_lora_layers(lm)) == 4
    with_lora = make_tiny_lm()
    lk.apply_lora(with_lora)
    with pytest.raises(ValueError, match="already has LoRA"):
        apply_multi_lora(with_lora, ADAPTERS)
    with_mixlora = make_tiny_lm()
    lk.apply_mixlora(with_mixlora, num_experts=2, rank=2)
    with pytest.raises(ValueError, match="MixLoRA feed-forward blocks"):
        apply_multi_lora(with_mixlora, ADAPTERS)
    with pytest.raises(ValueError, match="need a `keras_hub.models.GPT2CausalLM`"):
        apply_multi_lora(make_tiny_backbone(), ADAPTERS)


def test_adapter_ids_are_checked():
    lm = multi_lm()
    x, y = batch()
    with pytest.raises(ValueError, match="inputs need 'adapter_ids'"):
        lm(plain_inputs(x))
    for ids, message in [
        (np.array([0, 2, 1, 0], "int32"), r"adapter_ids \[2\] are out of range"),
        (np.array([0, -1, 1, 0], "int32"), "out of range"),
        (np.array([0.0, 1.0, 1.0, 0.0]), "must be integers"),
    ]:
        with pytest.raises(ValueError, match=message):
            lm({**x, "adapter_ids": ids})
        with pytest.raises(ValueError, match=message):
            lm.predict({**x, "adapter_ids": ids}, verbose=0)
    lm.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="out of range"):
        lm.fit({**x, "adapter_ids": IDS + 1}, y, verbose=0)
    assert adapter_names(lm) == ["small", "big"]
