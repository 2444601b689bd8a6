import subprocess
import sys

import keras
import keras_hub
import numpy as np
import pytest
from conftest import (
    TINY_GPT2,
    make_tiny_backbone,
    make_tiny_lm,
    next_token_dataset,
    randomize_lora_b,
    token_batch,
)
from keras.ops import convert_to_numpy as to_numpy

import lora_keras as lk
from lora_keras import gpt2_surgery
from lora_keras.lora import apply as lora_apply

HIDDEN, LAYERS, FFN = (
    TINY_GPT2["hidden_dim"],
    TINY_GPT2["num_layers"],
    TINY_GPT2["intermediate_dim"],
)

# Portable: CI runs these under JAX and torch too (`-m backends`).
pytestmark = pytest.mark.backends


def lora_weights_per_target(rank):
    """Scalars trained per block for each target, from the factor shapes A (in, r), B (r, out)."""
    return {
        "query": HIDDEN * rank + rank * HIDDEN,
        "key": HIDDEN * rank + rank * HIDDEN,
        "value": HIDDEN * rank + rank * HIDDEN,
        "attention_output": HIDDEN * rank + rank * HIDDEN,
        "ffn_in": HIDDEN * rank + rank * FFN,
        "ffn_out": FFN * rank + rank * HIDDEN,
    }


def test_apply_lora_wraps_query_and_value_of_every_block(tiny_lm):
    base_total = lk.trainable_summary(tiny_lm)["total"]
    wrappers = lk.apply_lora(tiny_lm, rank=4, alpha=32.0)
    assert len(wrappers) == 2 * LAYERS
    assert sorted(lk.lora_layers(tiny_lm)) == [
        f"transformer_layer_{i}/{t}" for i in range(LAYERS) for t in ("query", "value")
    ]
    per_target = lora_weights_per_target(4)
    expected = LAYERS * (per_target["query"] + per_target["value"])
    assert lk.trainable_summary(tiny_lm) == {
        "trainable": expected,
        "non_trainable": base_total,
        "total": base_total + expected,
    }
    assert {v.path.split("/")[-1] for v in tiny_lm.trainable_weights} == {
        "lora_kernel_a",
        "lora_kernel_b",
    }


def test_every_target_count(tiny_backbone):
    lk.apply_lora(tiny_backbone, rank=2, targets=lk.TARGETS)
    expected = LAYERS * sum(lora_weights_per_target(2).values())
    assert lk.trainable_summary(tiny_backbone)["trainable"] == expected
    line = lk.format_trainable_summary(tiny_backbone)
    assert line.startswith(f"trainable {expected:,} of ")


def test_merged_unmerged_and_unwrapped_agree_and_differ_from_base(tiny_lm):
    x = token_batch()
    base = to_numpy(tiny_lm(x))
    wrappers = lk.apply_lora(tiny_lm, rank=4, targets=("query", "value", "ffn_in"))
    np.testing.assert_array_equal(to_numpy(tiny_lm(x)), base)  # B is zero: a no-op
    randomize_lora_b(wrappers)
    unmerged = to_numpy(tiny_lm(x))
    assert np.abs(unmerged - base).max() > 1e-3
    lk.merge_lora(tiny_lm)
    merged = to_numpy(tiny_lm(x))
    lk.unmerge_lora(tiny_lm)
    np.testing.assert_allclose(to_numpy(tiny_lm(x)), unmerged, rtol=1e-5, atol=1e-5)
    lk.unwrap_lora(tiny_lm)
    unwrapped = to_numpy(tiny_lm(x))
    np.testing.assert_allclose(merged, unmerged, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(unwrapped, unmerged, rtol=1e-5, atol=1e-5)
    assert type(tiny_lm.backbone) is keras_hub.models.GPT2Backbone
    assert lk.lora_layers(tiny_lm) == {}
    assert lk.trainable_summary(tiny_lm)["non_trainable"] == 0


def test_fit_changes_only_lora_weights(tiny_lm):
    lk.apply_lora(tiny_lm, rank=4)
    lora_ids = {id(v) for v in tiny_lm.trainable_weights}
    before = {id(v): to_numpy(v).copy() for v in tiny_lm.weights}
    tiny_lm.compile(
        optimizer=keras.optimizers.AdamW(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x, y = next_token_dataset()
    tiny_lm.fit(x, y, epochs=3, batch_size=2, verbose=0)
    for variable in tiny_lm.weights:
        if id(variable) in lora_ids:
            # B moves on the first step; A once B is non-zero.
            assert not np.array_equal(to_numpy(variable), before[id(variable)]), variable.path
        else:
            np.testing.assert_array_equal(to_numpy(variable), before[id(variable)], variable.path)


def test_keras_round_trip_unmerged_and_merged(tiny_lm, tmp_path):
    x = token_batch()
    randomize_lora_b(lk.apply_lora(tiny_lm, rank=4))
    expected = to_numpy(tiny_lm(x))
    tiny_lm.save(tmp_path / "lora.keras")
    restored = keras.saving.load_model(tmp_path / "lora.keras")
    np.testing.assert_allclose(to_numpy(restored(x)), expected, rtol=1e-6, atol=1e-6)
    assert lk.trainable_summary(restored) == lk.trainable_summary(tiny_lm)

    lk.merge_lora(tiny_lm)
    tiny_lm.save(tmp_path / "merged.keras")
    restored = keras.saving.load_model(tmp_path / "merged.keras")
    assert all(layer.merged for layer in lk.lora_layers(restored).values())
    np.testing.assert_allclose(to_numpy(restored(x)), expected, rtol=1e-5, atol=1e-5)
    lk.unmerge_lora(restored)
    np.testing.assert_allclose(to_numpy(restored(x)), expected, rtol=1e-5, atol=1e-5)


def test_unwrapped_model_loads_without_lora_keras(tiny_lm, tmp_path):
    x = token_batch()
    randomize_lora_b(lk.apply_lora(tiny_lm, rank=4))
    lk.unwrap_lora(tiny_lm)
    tiny_lm.save(tmp_path / "plain.keras")
    np.save(tmp_path / "x.npy", x["token_ids"])
    np.save(tmp_path / "expected.npy", to_numpy(tiny_lm(x)))
    script = f"""
import sys, numpy as np, keras
model = keras.saving.load_model({str(tmp_path / "plain.keras")!r})
ids = np.load({str(tmp_path / "x.npy")!r})
out = keras.ops.convert_to_numpy(model({{"token_ids": ids, "padding_mask": np.ones_like(ids)}}))
np.testing.assert_allclose(out, np.load({str(tmp_path / "expected.npy")!r}), rtol=1e-5, atol=1e-5)
assert "lora_keras" not in sys.modules, "lora_keras was imported"
print(type(model.backbone).__name__)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("GPT2Backbone")


def test_mixed_precision_model_trains(tmp_path):
    lm = make_tiny_lm(dtype="mixed_bfloat16")
    wrappers = lk.apply_lora(lm, rank=4)
    assert all(w.lora_kernel_a.dtype == "float32" for w in wrappers)
    assert all(w.compute_dtype == "bfloat16" for w in wrappers)
    lm.compile(
        optimizer=keras.optimizers.AdamW(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x, y = next_token_dataset()
    history = lm.fit(x, y, epochs=2, batch_size=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert np.any(to_numpy(wrappers[0].lora_kernel_b) != 0.0)


def test_unknown_target_lists_valid_ones(tiny_backbone):
    with pytest.raises(
        ValueError,
        match="Unknown LoRA target\\(s\\) \\['keys'\\]. Valid targets: "
        "query, key, value, attention_output, ffn_in, ffn_out",
    ):
        lk.apply_lora(tiny_backbone, targets=("query", "keys"))


def test_repeated_target_is_refused(tiny_backbone):
    with pytest.raises(ValueError, match="LoRA targets must not repeat"):
        lk.apply_lora(tiny_backbone, targets=("query", "query"))


def test_lora_applied_twice_is_refused(tiny_backbone):
    lk.apply_lora(tiny_backbone, targets=("value",))
    before = lk.trainable_summary(tiny_backbone)
    with pytest.raises(ValueError, match="LoRA is already applied to transformer_layer_0/value"):
        lk.apply_lora(tiny_backbone, targets=("query", "value"))
    # The refused call changed nothing: query is still plain, and as frozen as before.
    assert sorted(lk.lora_layers(tiny_backbone)) == [
        "transformer_layer_0/value",
        "transformer_layer_1/value",
    ]
    assert lk.trainable_summary(tiny_backbone) == before


def test_more_targets_need_the_same_settings(tiny_backbone):
    lk.apply_lora(tiny_backbone, rank=4, targets=("value",))
    with pytest.raises(ValueError, match="already has LoRA with .*'rank': 4.* got .*'rank': 2"):
        lk.apply_lora(tiny_backbone, rank=2, targets=("query",))
    lk.apply_lora(tiny_backbone, rank=4, targets=("query",))
    assert len(lk.lora_layers(tiny_backbone)) == 2 * LAYERS


def test_bad_rank_changes_nothing(tiny_backbone):
    before = lk.trainable_summary(tiny_backbone)
    with pytest.raises(ValueError, match="LoRA rank 65 is larger than the smallest dimension"):
        lk.apply_lora(tiny_backbone, rank=65)
    assert lk.lora_layers(tiny_backbone) == {}
    assert type(tiny_backbone) is keras_hub.models.GPT2Backbone
    assert lk.trainable_summary(tiny_backbone) == before


def test_a_wrapper_refused_midway_unfreezes_those_built_before(tiny_backbone, monkeypatch):
    before = lk.trainable_summary(tiny_backbone)

    def refuse(*args, **kwargs):
        raise ValueError("refused for the test")

    # query's wrappers (LoraEinsumDense) are built, then ffn_in's (LoraDense) is refused.
    monkeypatch.setitem(lora_apply.VARIANTS, "lora", (lora_apply.LoraEinsumDense, refuse))
    with pytest.raises(ValueError, match="refused for the test"):
        lk.apply_lora(tiny_backbone, targets=("query", "ffn_in"))
    assert lk.trainable_summary(tiny_backbone) == before


def test_not_a_gpt2_model_is_refused():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="Expected a KerasHub GPT-2 model .* got Sequential"):
        lk.apply_lora(model)


@pytest.mark.parametrize(
    "function, verb",
    [
        (lk.merge_lora, "merge"),
        (lk.unmerge_lora, "unmerge"),
        (lk.unwrap_lora, "unwrap"),
    ],
)
def test_model_without_lora_is_refused(tiny_backbone, function, verb):
    with pytest.raises(ValueError, match=f"Cannot {verb}: this model has no LoRA layers"):
        function(tiny_backbone)


def test_merge_twice_is_refused(tiny_backbone):
    lk.apply_lora(tiny_backbone)
    lk.merge_lora(tiny_backbone)
    with pytest.raises(ValueError, match="is already merged"):
        lk.merge_lora(tiny_backbone)


def test_renamed_kerashub_attribute_fails_clearly(tiny_backbone):
    attention = tiny_backbone.transformer_layers[0]._self_attention_layer
    delattr(attention, "_value_dense")
    with pytest.raises(RuntimeError, match="has no attribute '_self_attention_layer._value_dense'"):
        lk.apply_lora(tiny_backbone)


def test_a_projection_of_another_type_fails_clearly(tiny_backbone):
    attention = tiny_backbone.transformer_layers[1]._self_attention_layer
    object.__setattr__(attention, "_query_dense", keras.layers.Identity())
    with pytest.raises(
        RuntimeError,
        match="Expected '_self_attention_layer._query_dense' of "
        "TransformerDecoder to be an EinsumDense or Dense layer, found Identity",
    ):
        lk.apply_lora(tiny_backbone)


def test_layout_of_installed_kerashub_is_known():
    backbone = make_tiny_backbone()
    gpt2_surgery.check_layout(backbone)
    block = backbone.transformer_layers[0]
    assert isinstance(gpt2_surgery.get_layer(block, "query"), keras.layers.EinsumDense)
    assert isinstance(gpt2_surgery.get_layer(block, "ffn_in"), keras.layers.Dense)


@pytest.mark.large
def test_gpt2_base_counts_ours_and_keras_builtin(tmp_path):
    """Ours factorizes the whole kernel; Keras's `enable_lora` only its last axis.

    For the query kernel (768, 12, 64) Keras's A is (768, 12, 4) and B is (4, 64),
    so 12 * 2 * (768*12*4 + 4*64) = 890,880 LoRA weights train, plus the
    12 * 2 * 768 = 18,432 query/value biases that KerasHub leaves trainable:
    909,312 in all, against our 12 * 2 * (768*4 + 4*768) = 147,456.
    """
    config = lk.GPT2_ARCHITECTURES["gpt2_base_en"]
    ours = keras_hub.models.GPT2Backbone(**config)
    lk.apply_lora(ours, rank=4, alpha=32.0)
    counts = lk.trainable_summary(ours)
    assert counts["trainable"] == 12 * 2 * (768 * 4 + 4 * 768) == 147_456
    assert counts["total"] == 124_439_808 + 147_456
    assert lk.format_trainable_summary(ours) == "trainable 147,456 of 124,587,264 (0.12%)"
    # The adapter file holds those weights in float32 and little else: about 0.6 MB.
    lk.save_adapter(ours, tmp_path / "base.lora.h5")
    assert 147_456 * 4 < (tmp_path / "base.lora.h5").stat().st_size < 0.65e6
    del ours

    theirs = keras_hub.models.GPT2Backbone(**config)
    theirs.enable_lora(4)
    trainable = {v.path: int(np.prod(v.shape)) for v in theirs.trainable_weights}
    lora_only = sum(n for path, n in trainable.items() if "lora" in path)
    biases = sum(n for path, n in trainable.items() if path.endswith("bias"))
    assert lora_only == 12 * 2 * (768 * 12 * 4 + 4 * 64) == 890_880
    assert biases == 12 * 2 * 768
    assert sum(trainable.values()) == 909_312


def test_compiled_functions_follow_apply_merge_unmerge_and_unwrap(tiny_lm):
    """`predict_on_batch` traces `call` once; each change must be traced again."""
    x = token_batch()

    def compiled():
        return np.asarray(tiny_lm.predict_on_batch(x))

    base = compiled()
    randomize_lora_b(lk.apply_lora(tiny_lm, rank=4))
    eager = to_numpy(tiny_lm(x))
    assert np.abs(eager - base).max() > 1e-3
    np.testing.assert_allclose(compiled(), eager, rtol=1e-5, atol=1e-5)
    lk.merge_lora(tiny_lm)
    np.testing.assert_allclose(compiled(), eager, rtol=1e-5, atol=1e-5)
    lk.unmerge_lora(tiny_lm)
    np.testing.assert_allclose(compiled(), eager, rtol=1e-5, atol=1e-5)
    lk.unwrap_lora(tiny_lm)
    np.testing.assert_allclose(compiled(), eager, rtol=1e-5, atol=1e-5)


def test_fit_on_a_merged_model_says_to_unmerge(tiny_lm):
    lk.apply_lora(tiny_lm, rank=4)
    lk.merge_lora(tiny_lm)
    tiny_lm.compile(
        optimizer=keras.optimizers.AdamW(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x, y = next_token_dataset()
    before = [v.numpy().copy() for v in tiny_lm.weights]
    with pytest.raises(ValueError, match="is merged: merged LoRA must be unmerged to train. Call"):
        tiny_lm.fit(x, y, epochs=1, batch_size=2, verbose=0)
    if keras.backend.backend() == "jax":
        # Keras's JAX trainer detaches every variable's value before the first step is traced
        # and cannot put them back when that step raises: the model must be loaded again.
        return
    for variable, value in zip(tiny_lm.weights, before, strict=True):
        np.testing.assert_array_equal(variable.numpy(), value)
    # Inference on the merged model is what merging is for, and still runs.
    assert tiny_lm.predict(x, verbose=0).shape == (2, 12, 97)
    lk.unmerge_lora(tiny_lm)
    tiny_lm.fit(x, y, epochs=1, batch_size=2, verbose=0)


@pytest.mark.parametrize("alpha", [float("nan"), -32.0])
def test_a_nan_or_negative_alpha_is_refused_and_changes_nothing(tiny_backbone, alpha):
    before = lk.trainable_summary(tiny_backbone)
    with pytest.raises(ValueError, match="LoRA alpha must be a finite number above 0"):
        lk.apply_lora(tiny_backbone, alpha=alpha)
    assert lk.lora_layers(tiny_backbone) == {}
    assert lk.trainable_summary(tiny_backbone) == before


def test_a_bool_rank_is_refused_and_changes_nothing(tiny_backbone):
    before = lk.trainable_summary(tiny_backbone)
    with pytest.raises(
        ValueError, match="LoRA rank must be an integer of at least 1, got rank=True"
    ):
        lk.apply_lora(tiny_backbone, rank=True)
    assert lk.lora_layers(tiny_backbone) == {}
    assert lk.trainable_summary(tiny_backbone) == before


def test_a_lora_keras_file_loads_in_a_fresh_process_that_imports_keras_first(tiny_lm, tmp_path):
    randomize_lora_b(lk.apply_lora(tiny_lm, rank=4))
    tiny_lm.save(tmp_path / "lora.keras")
    # `import lora_keras` is lazy; with Keras already imported it registers the LoRA classes.
    script = f"""
import keras, lora_keras
model = keras.saving.load_model({str(tmp_path / "lora.keras")!r})
print(type(model.backbone).__name__, len(lora_keras.lora_layers(model)))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-2:] == ["AdaptedGPT2Backbone", str(2 * LAYERS)]
