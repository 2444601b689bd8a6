import gc
import math
import weakref

import keras
import keras_hub
import numpy as np
import pytest
from conftest import make_tiny_lm, next_token_dataset, randomize_lora_b, token_batch
from keras import ops

import lora_keras as lk
from lora_keras import gpt2_surgery as surgery
from lora_keras.experiments.train_one import MODES
from lora_keras.layers.nf4_codec import stored_shapes

NUM_BLOCKS = 2
KERNEL_SHAPES = {  # the tiny GPT-2's block kernels (hidden 64, 4 heads, intermediate 128)
    "query": (64, 4, 16),
    "key": (64, 4, 16),
    "value": (64, 4, 16),
    "attention_output": (4, 16, 64),
    "ffn_in": (64, 128),
    "ffn_out": (128, 64),
}


def outputs(lm, batch=None):
    return ops.convert_to_numpy(lm(batch or token_batch()))


def layout(lm):
    """What sits at every target, and every variable's value: to see that nothing changed."""
    backbone = surgery.find_backbone(lm)
    kinds = [
        type(surgery.get_layer(block, target)).__name__
        for block in backbone.transformer_layers
        for target in surgery.TARGETS
    ]
    return kinds, type(backbone).__name__, [ops.convert_to_numpy(v) for v in backbone.weights]


def assert_same_layout(before, after):
    assert before[:2] == after[:2]
    for old, new in zip(before[2], after[2], strict=True):
        np.testing.assert_array_equal(old, new)


def assert_close_not_equal(quantized, reference):
    """An NF4 model's logits against the float model's: 4 bits a weight round, a little."""
    assert 0 < np.abs(quantized - reference).mean() < 0.2 * np.abs(reference).mean()
    assert np.corrcoef(quantized.reshape(-1), reference.reshape(-1))[0, 1] > 0.98


def compiled(lm):
    lm.compile(
        optimizer=keras.optimizers.Adam(2e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return lm


def test_quantize_nf4_stores_every_block_kernel_as_nf4():
    lm = make_tiny_lm()
    reference = outputs(lm)
    counts = lk.trainable_summary(lm)
    float_bytes = lk.stored_weight_bytes(lm)
    assert not lk.is_nf4_quantized(lm)
    layers = lk.quantize_nf4(lm)
    assert len(layers) == NUM_BLOCKS * 6 and lk.is_nf4_quantized(lm)
    assert isinstance(lm.backbone, lk.AdaptedGPT2Backbone)
    for block in lm.backbone.transformer_layers:
        for target, shape in KERNEL_SHAPES.items():
            layer = surgery.get_layer(block, target)
            nf4_class = lk.NF4Dense if target.startswith("ffn") else lk.NF4EinsumDense
            assert type(layer) is nf4_class and layer.kernel_shape == shape
            dtypes = {v.name: keras.backend.standardize_dtype(v.dtype) for v in layer.weights}
            assert dtypes == {
                "codes": "uint8",
                "absmax_codes": "int8",
                "absmax_scales": "float32",
                "absmax_mean": "float32",
                "bias": "float32",
            }
            assert layer.codes.shape == (math.prod(shape) // 2,)
    # Embeddings and layer norms stay float and trainable; the quantized layers are frozen.
    assert lm.backbone.token_embedding.embeddings.dtype == "float32"
    assert all(keras.backend.standardize_dtype(v.dtype) == "float32" for v in lm.trainable_weights)
    # The summary counts the weights an NF4 kernel stands for; the bytes are the packed ones.
    assert lk.trainable_summary(lm)["total"] == counts["total"]
    kernels = NUM_BLOCKS * sum(math.prod(s) for s in KERNEL_SHAPES.values())
    packed = NUM_BLOCKS * sum(
        math.prod(shape) * np.dtype(dtype).itemsize
        for kernel_shape in KERNEL_SHAPES.values()
        for shape, dtype in stored_shapes(kernel_shape, 64, True).values()
    )
    assert lk.stored_weight_bytes(lm) == float_bytes - 4 * kernels + packed
    assert_close_not_equal(outputs(lm), reference)


def test_the_float_kernels_are_freed_once_the_model_is_compiled_again():
    lm = make_tiny_lm()
    backbone = lm.backbone
    floats = [
        weakref.ref(surgery.get_layer(block, target).kernel)
        for block in backbone.transformer_layers
        for target in surgery.TARGETS
    ]
    lk.quantize_nf4(lm)
    lk.apply_lora(lm, rank=2)
    compiled(lm)
    gc.collect()
    assert [ref() for ref in floats] == [None] * len(floats)


def test_estimate_knows_nf4_storage():
    lm = make_tiny_lm()
    float_weights = lk.estimate_for_model(lm, 2, 16)["weights"]
    lk.quantize_nf4(lm)
    kernels = NUM_BLOCKS * sum(math.prod(s) for s in KERNEL_SHAPES.values())
    expected = float_weights - 4 * kernels + round(kernels * 4.126953125 / 8)
    assert abs(lk.estimate_for_model(lm, 2, 16)["weights"] - expected) <= 1


def test_lora_on_nf4_is_a_no_op_at_init_and_only_lora_trains():
    lm = make_tiny_lm()
    lk.quantize_nf4(lm)
    quantized = outputs(lm)
    wrappers = lk.apply_lora(lm, rank=4, targets=("query", "value", "attention_output", "ffn_in"))
    np.testing.assert_array_equal(outputs(lm), quantized)
    assert all(isinstance(w.original_layer, lk.BaseNF4Layer) for w in wrappers)
    assert type(wrappers[2]) is lk.LoraEinsumDense and type(wrappers[3]) is lk.LoraDense
    expected = NUM_BLOCKS * (2 * (64 * 4 + 4 * 64) + (64 * 4 + 4 * 64) + (64 * 4 + 4 * 128))
    assert lk.trainable_summary(lm)["trainable"] == expected
    assert {id(v) for v in lm.trainable_weights} == {
        id(v) for w in wrappers for v in (w.lora_kernel_a, w.lora_kernel_b)
    }
    before = [ops.convert_to_numpy(v) for v in lm.weights]
    x, y = next_token_dataset(batch_size=4, sequence_length=16)
    history = compiled(lm).fit(x, y, epochs=6, batch_size=4, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < losses[0] - 0.05, losses
    lora_ids = {id(v) for v in lm.trainable_weights}
    for variable, old in zip(lm.weights, before, strict=True):
        changed = not np.array_equal(ops.convert_to_numpy(variable), old)
        assert changed == (id(variable) in lora_ids), variable.path


def test_qlora_trains_as_lora_on_the_dequantized_kernels():
    # The custom gradient through NF4 is the float gradient through the same kernel values.
    trained = []
    for dequantize in (False, True):
        lm = make_tiny_lm()
        lk.quantize_nf4(lm)
        if dequantize:
            lk.dequantize_nf4(lm)
        keras.utils.set_random_seed(1)
        lk.apply_lora(lm, rank=4, targets=("attention_output", "ffn_out"))
        x, y = next_token_dataset(batch_size=4, sequence_length=16)
        compiled(lm).fit(x, y, epochs=2, batch_size=4, verbose=0)
        trained.append([ops.convert_to_numpy(v) for v in lm.trainable_weights])
    for nf4, dequantized in zip(*trained, strict=True):
        np.testing.assert_allclose(nf4, dequantized, atol=1e-5)


def test_keras_round_trip_of_an_nf4_model_with_and_without_lora(tmp_path):
    lm = make_tiny_lm()
    lk.quantize_nf4(lm, block_size=32)
    lm.save(tmp_path / "nf4.keras")
    restored = keras.saving.load_model(tmp_path / "nf4.keras")
    assert isinstance(restored.backbone, lk.AdaptedGPT2Backbone)
    np.testing.assert_array_equal(outputs(restored), outputs(lm))
    wrappers = lk.apply_lora(lm, rank=2, targets=("query", "ffn_out"))
    randomize_lora_b(wrappers)
    lm.save(tmp_path / "qlora.keras")
    restored = keras.saving.load_model(tmp_path / "qlora.keras")
    assert isinstance(restored.backbone, lk.AdaptedGPT2Backbone) and lk.is_nf4_quantized(restored)
    assert lk.lora_layers(restored).keys() == lk.lora_layers(lm).keys()
    assert all(layer.block_size == 32 for layer in lk.nf4_layers(restored).values())
    np.testing.assert_array_equal(outputs(restored), outputs(lm))


def test_dora_on_nf4_works_and_refuses_to_merge(tmp_path):
    # QDoRA: DoRA reads the dequantized kernel (`kernel` of the NF4 layer) for its norm and
    # direction, so it keeps that float kernel for its backward pass, unlike QLoRA.
    lm = make_tiny_lm()
    lk.quantize_nf4(lm)
    quantized = outputs(lm)
    lk.apply_lora(lm, rank=2, variant="dora")
    np.testing.assert_allclose(outputs(lm), quantized, atol=1e-6)
    x, y = next_token_dataset(batch_size=4, sequence_length=16)
    losses = compiled(lm).fit(x, y, epochs=3, batch_size=4, verbose=0).history["loss"]
    assert losses[-1] < losses[0], losses
    with pytest.raises(ValueError, match="Cannot `merge_lora` this model: its frozen kernels"):
        lk.merge_lora(lm)
    lm.save(tmp_path / "qdora.keras")
    restored = keras.saving.load_model(tmp_path / "qdora.keras")
    assert lk.is_nf4_quantized(restored)
    np.testing.assert_array_equal(outputs(restored), outputs(lm))


def test_adapters_of_a_qlora_model_hold_only_lora_weights(tmp_path):
    lm = make_tiny_lm()
    lk.quantize_nf4(lm)
    randomize_lora_b(lk.apply_lora(lm, rank=4))
    path = tmp_path / "qlora.lora.h5"
    lk.save_adapter(lm, path)
    other = make_tiny_lm()
    lk.quantize_nf4(other)
    lk.load_adapter(other, path)
    np.testing.assert_array_equal(outputs(other), outputs(lm))
    # The same adapter on the float model: the base differs by the NF4 rounding only.
    float_lm = make_tiny_lm()
    lk.load_adapter(float_lm, path)
    assert not lk.is_nf4_quantized(float_lm)
    assert_close_not_equal(outputs(lm), outputs(float_lm))


def test_merging_a_qlora_model_goes_through_a_float_model(tmp_path):
    lm = make_tiny_lm()
    lk.quantize_nf4(lm)
    randomize_lora_b(lk.apply_lora(lm, rank=4, targets=("query", "ffn_in")))
    qlora = outputs(lm)
    before = layout(lm)
    for function in (lk.merge_lora, lk.unwrap_lora):
        with pytest.raises(
            ValueError,
            match=f"Cannot `{function.__name__}` this model: its frozen kernels are stored as NF4 "
            f"\\(QLoRA\\).*Call `lk.dequantize_nf4\\(model\\)` first",
        ):
            function(lm)
        assert_same_layout(before, layout(lm))
    lk.dequantize_nf4(lm)
    assert not lk.is_nf4_quantized(lm) and isinstance(lm.backbone, lk.AdaptedGPT2Backbone)
    np.testing.assert_allclose(outputs(lm), qlora, atol=1e-6)
    assert {id(v) for v in lm.trainable_weights} == {
        id(v) for w in lk.lora_layers(lm).values() for v in (w.lora_kernel_a, w.lora_kernel_b)
    }
    lk.merge_lora(lm)
    np.testing.assert_allclose(outputs(lm), qlora, atol=1e-5)
    lk.unwrap_lora(lm)
    assert type(lm.backbone) is keras_hub.models.GPT2Backbone
    assert (
        type(surgery.get_layer(lm.backbone.transformer_layers[0], "ffn_in")) is keras.layers.Dense
    )
    np.testing.assert_allclose(outputs(lm), qlora, atol=1e-5)
    lm.save(tmp_path / "plain.keras")  # a plain GPT-2 again


def test_dequantize_without_lora_gives_a_plain_trainable_gpt2():
    lm = make_tiny_lm()
    lk.quantize_nf4(lm)
    quantized = outputs(lm)
    lk.dequantize_nf4(lm)
    assert type(lm.backbone) is keras_hub.models.GPT2Backbone
    assert all(v.trainable for v in lm.backbone.weights)
    np.testing.assert_allclose(outputs(lm), quantized, atol=1e-6)
    with pytest.raises(ValueError, match="Cannot dequantize: this model has no NF4 layers"):
        lk.dequantize_nf4(lm)


def test_quantizing_twice_is_refused_and_changes_nothing():
    lm = make_tiny_lm()
    lk.quantize_nf4(lm)
    before = layout(lm)
    with pytest.raises(ValueError, match="already stored as NF4: quantize once"):
        lk.quantize_nf4(lm)
    assert_same_layout(before, layout(lm))


def test_quantizing_under_lora_is_refused_and_changes_nothing():
    lm = make_tiny_lm()
    lk.apply_lora(lm, rank=4)
    before = layout(lm)
    with pytest.raises(ValueError, match="already has LoRA: quantize first, then apply LoRA"):
        lk.quantize_nf4(lm)
    assert_same_layout(before, layout(lm))


def test_keras_quantized_layers_are_refused():
    lm = make_tiny_lm()
    surgery.get_layer(lm.backbone.transformer_layers[1], "value").quantize("int8")
    before = layout(lm)
    with pytest.raises(
        ValueError,
        match="transformer_layer_1/value uses Keras's built-in LoRA or quantization .*mode int8",
    ):
        lk.quantize_nf4(lm)
    assert_same_layout(before, layout(lm))


def test_nf4_and_mixlora_refuse_each_other():
    lm = make_tiny_lm()
    lk.apply_mixlora(lm, num_experts=2, top_k=1, rank=2)
    before = layout(lm)
    with pytest.raises(ValueError, match="MixLoRA feed-forward blocks.*NF4 under MixLoRA is not"):
        lk.quantize_nf4(lm)
    assert_same_layout(before, layout(lm))
    lm = make_tiny_lm()
    lk.quantize_nf4(lm)
    before = layout(lm)
    with pytest.raises(ValueError, match="stored as NF4 \\(QLoRA\\); MixLoRA's experts share"):
        lk.apply_mixlora(lm, num_experts=2, top_k=1, rank=2)
    assert_same_layout(before, layout(lm))


def test_a_bad_block_size_changes_nothing():
    lm = make_tiny_lm()
    before = layout(lm)
    with pytest.raises(ValueError, match="block_size must be an even integer"):
        lk.quantize_nf4(lm, block_size=5)
    assert_same_layout(before, layout(lm))


def test_the_qlora_mode_quantizes_then_applies_lora():
    lm = make_tiny_lm()
    MODES["qlora"](lm, {"rank": 2, "alpha": 16.0, "targets": ["query", "value"]})
    assert lk.is_nf4_quantized(lm) and len(lk.nf4_layers(lm)) == NUM_BLOCKS * 6
    assert sorted(lk.lora_layers(lm)) == [
        f"transformer_layer_{i}/{t}" for i in range(NUM_BLOCKS) for t in ("query", "value")
    ]
    assert all(layer.rank == 2 for layer in lk.lora_layers(lm).values())


def test_quantize_nf4_refuses_other_models():
    with pytest.raises(ValueError, match="Expected a KerasHub GPT-2 model"):
        lk.quantize_nf4(keras.Sequential([keras.layers.Dense(2)]))
