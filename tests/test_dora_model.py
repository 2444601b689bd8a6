"""DoRA in a whole GPT-2: injection, merging, saving, adapters, training, the estimate."""

import json

import h5py
import keras
import keras_hub
import numpy as np
import pytest
from conftest import TINY_GPT2, make_tiny_lm, next_token_dataset, randomize_lora_b, token_batch
from test_injection import lora_weights_per_target

import lora_keras as lk
from lora_keras.experiments.job_file import read_job
from lora_keras.experiments.train_one import MODES
from lora_keras.measure.estimate import estimate_for_model
from lora_keras.measure.estimate_text import explain_estimate

HIDDEN, LAYERS, FFN = (
    TINY_GPT2["hidden_dim"],
    TINY_GPT2["num_layers"],
    TINY_GPT2["intermediate_dim"],
)
# One magnitude per output unit of each target's kernel.
OUTPUT_UNITS = {
    "query": HIDDEN,
    "key": HIDDEN,
    "value": HIDDEN,
    "attention_output": HIDDEN,
    "ffn_in": FFN,
    "ffn_out": HIDDEN,
}


def run(model, x):
    """The model's output as numpy, on any backend."""
    return keras.ops.convert_to_numpy(model(x))


def trained_dora(lm, targets=("query", "value"), rank=4, seed=0):
    """DoRA with non-zero B and magnitudes moved off their start, as after training."""
    wrappers = lk.apply_lora(lm, rank=rank, alpha=16.0, targets=targets, variant="dora")
    randomize_lora_b(wrappers, seed=seed)
    rng = np.random.default_rng(seed + 1)
    for layer in wrappers:
        magnitude = layer.magnitude.numpy()
        layer.magnitude.assign(magnitude * rng.uniform(0.8, 1.2, magnitude.shape).astype("float32"))
    return wrappers


def test_every_target_gets_a_dora_wrapper_and_only_its_weights_train(tiny_lm):
    base_total = lk.trainable_summary(tiny_lm)["total"]
    wrappers = lk.apply_lora(tiny_lm, rank=2, targets=lk.TARGETS, variant="dora")
    assert {type(w).__name__ for w in wrappers} == {"DoraEinsumDense", "DoraDense"}
    per_target = lora_weights_per_target(2)
    trainable = LAYERS * sum(per_target[t] + OUTPUT_UNITS[t] for t in lk.TARGETS)
    merged_norms = LAYERS * sum(OUTPUT_UNITS.values())
    assert lk.trainable_summary(tiny_lm) == {
        "trainable": trainable,
        "non_trainable": base_total + merged_norms,
        "total": base_total + trainable + merged_norms,
    }
    assert {v.path.split("/")[-1] for v in tiny_lm.trainable_weights} == {
        "lora_kernel_a",
        "lora_kernel_b",
        "magnitude",
    }


def test_no_op_at_initialization(tiny_lm):
    x = token_batch()
    base = run(tiny_lm, x)
    lk.apply_lora(tiny_lm, rank=4, targets=lk.TARGETS, variant="dora")
    np.testing.assert_array_equal(run(tiny_lm, x), base)


def test_merged_unmerged_and_unwrapped_agree_and_differ_from_base(tiny_lm):
    x = token_batch()
    base = run(tiny_lm, x)
    trained_dora(tiny_lm, targets=("query", "attention_output", "ffn_in"))
    unmerged = run(tiny_lm, x)
    assert np.abs(unmerged - base).max() > 1e-3
    lk.merge_lora(tiny_lm)
    merged = run(tiny_lm, x)
    lk.unmerge_lora(tiny_lm)
    np.testing.assert_allclose(run(tiny_lm, x), unmerged, rtol=1e-5, atol=1e-5)
    lk.unwrap_lora(tiny_lm)
    unwrapped = run(tiny_lm, x)
    np.testing.assert_allclose(merged, unmerged, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(unwrapped, unmerged, rtol=1e-5, atol=1e-5)
    assert type(tiny_lm.backbone) is keras_hub.models.GPT2Backbone
    assert lk.trainable_summary(tiny_lm)["non_trainable"] == 0


def test_keras_round_trip_unmerged_and_merged(tiny_lm, tmp_path):
    x = token_batch()
    trained_dora(tiny_lm, targets=("value", "attention_output"))
    expected = run(tiny_lm, x)
    assert tiny_lm.backbone.get_config()["lora"]["variant"] == "dora"
    tiny_lm.save(tmp_path / "dora.keras")
    restored = keras.saving.load_model(tmp_path / "dora.keras")
    assert {type(w).__name__ for w in lk.lora_layers(restored).values()} == {"DoraEinsumDense"}
    np.testing.assert_allclose(run(restored, x), expected, rtol=1e-6, atol=1e-6)

    lk.merge_lora(tiny_lm)
    tiny_lm.save(tmp_path / "merged.keras")
    restored = keras.saving.load_model(tmp_path / "merged.keras")
    assert all(layer.merged for layer in lk.lora_layers(restored).values())
    np.testing.assert_allclose(run(restored, x), expected, rtol=1e-5, atol=1e-5)
    lk.unmerge_lora(restored)  # needs the norms kept at merge time, saved with the model
    np.testing.assert_allclose(run(restored, x), expected, rtol=1e-5, atol=1e-5)


def test_tiny_model_trains_and_only_dora_weights_change(tiny_lm):
    lk.apply_lora(tiny_lm, rank=4, targets=("query", "value", "ffn_in"), variant="dora")
    trainable_ids = {id(v) for v in tiny_lm.trainable_weights}
    before = {id(v): v.numpy().copy() for v in tiny_lm.weights}
    tiny_lm.compile(
        optimizer=keras.optimizers.AdamW(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x, y = next_token_dataset()
    losses = tiny_lm.fit(x, y, epochs=5, batch_size=2, verbose=0).history["loss"]
    assert losses[-1] < losses[0], losses
    for variable in tiny_lm.weights:
        changed = not np.array_equal(variable.numpy(), before[id(variable)])
        assert changed == (id(variable) in trainable_ids), variable.path


def test_adapter_round_trip_carries_the_magnitude_and_the_variant(tmp_path):
    source = make_tiny_lm()
    trained_dora(source, targets=("query", "ffn_out"))
    x = token_batch()
    expected = run(source, x)
    path = tmp_path / "tiny.dora.h5"
    lk.save_adapter(source, path)
    with h5py.File(path, "r") as file:
        assert json.loads(file.attrs["settings"])["variant"] == "dora"
        assert file.attrs["version"] == 2
        assert sorted(file["transformer_layer_0/ffn_out"]) == [
            "lora_kernel_a",
            "lora_kernel_b",
            "magnitude",
        ]
    fresh = make_tiny_lm()
    assert lk.load_adapter(fresh, path)["variant"] == "dora"
    assert {type(w).__name__ for w in lk.lora_layers(fresh).values()} == {
        "DoraEinsumDense",
        "DoraDense",
    }
    np.testing.assert_allclose(run(fresh, x), expected, rtol=1e-6, atol=1e-6)


def test_load_into_a_merged_dora_model_keeps_it_consistent(tmp_path):
    source = make_tiny_lm(seed=1)
    trained_dora(source, seed=1)
    x = token_batch()
    expected = run(source, x)
    lk.save_adapter(source, tmp_path / "a.h5")
    target = make_tiny_lm(seed=1)
    trained_dora(target, seed=2)
    lk.merge_lora(target)
    lk.load_adapter(target, tmp_path / "a.h5")
    assert all(layer.merged for layer in lk.lora_layers(target).values())
    np.testing.assert_allclose(run(target, x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("saved, loaded", [("dora", "lora"), ("lora", "dora")])
def test_adapter_of_the_other_variant_is_refused_and_changes_nothing(tmp_path, saved, loaded):
    source = make_tiny_lm()
    randomize_lora_b(lk.apply_lora(source, rank=4, alpha=16.0, variant=saved))
    lk.save_adapter(source, tmp_path / "a.h5")
    target = make_tiny_lm()
    lk.apply_lora(target, rank=4, alpha=16.0, variant=loaded)
    before = [v.numpy().copy() for v in target.weights]
    with pytest.raises(
        ValueError,
        match=f"Wrong variant: the adapter was written by a '{saved}' model, this model's "
        f"LoRA is '{loaded}'. Load it into a model without LoRA, or unwrap first",
    ):
        lk.load_adapter(target, tmp_path / "a.h5")
    for variable, old in zip(target.weights, before, strict=True):
        np.testing.assert_array_equal(variable.numpy(), old)


def saved_dora_adapter(tmp_path, edit):
    source = make_tiny_lm()
    trained_dora(source)
    path = tmp_path / "a.h5"
    lk.save_adapter(source, path)
    with h5py.File(path, "r+") as file:
        edit(file)
    return path


def test_dora_adapter_without_its_magnitude_is_refused(tmp_path):
    path = saved_dora_adapter(
        tmp_path, lambda f: f.__delitem__("transformer_layer_1/value/magnitude")
    )
    plain = make_tiny_lm()
    with pytest.raises(
        ValueError,
        match="The adapter file holds \\['lora_kernel_a', 'lora_kernel_b'\\] for "
        "transformer_layer_1/value; a 'dora' adapter holds \\['lora_kernel_a', "
        "'lora_kernel_b', 'magnitude'\\]",
    ):
        lk.load_adapter(plain, path)
    assert lk.lora_layers(plain) == {}


def test_magnitude_of_the_wrong_shape_is_refused(tmp_path):
    def wrong_shape(file):
        del file["transformer_layer_0/query/magnitude"]
        file["transformer_layer_0/query/magnitude"] = np.ones(3, "float32")

    with pytest.raises(
        ValueError,
        match="Adapter of the wrong shape for transformer_layer_0/query: its magnitude has "
        "shape \\(3,\\), its B has output shape \\(4, 16\\)",
    ):
        lk.load_adapter(make_tiny_lm(), saved_dora_adapter(tmp_path, wrong_shape))


def test_adapter_of_an_unknown_variant_is_refused(tmp_path):
    def vera(file):
        settings = json.loads(file.attrs["settings"])
        file.attrs["settings"] = json.dumps(dict(settings, variant="vera"))

    with pytest.raises(
        ValueError, match="holds a 'vera' adapter; this lora_keras knows the variants lora, dora"
    ):
        lk.load_adapter(make_tiny_lm(), saved_dora_adapter(tmp_path, vera))


def test_version_1_adapter_loads_as_lora(tmp_path):
    source = make_tiny_lm()
    randomize_lora_b(lk.apply_lora(source, rank=4, alpha=16.0))
    path = tmp_path / "old.h5"
    lk.save_adapter(source, path)
    with h5py.File(path, "r+") as file:  # as lora_keras wrote it before variants
        file.attrs["version"] = 1
        settings = json.loads(file.attrs["settings"])
        del settings["variant"]
        file.attrs["settings"] = json.dumps(settings)
    fresh = make_tiny_lm()
    assert lk.load_adapter(fresh, path)["variant"] == "lora"
    np.testing.assert_allclose(
        run(fresh, token_batch()), run(source, token_batch()), rtol=1e-6, atol=1e-6
    )


def test_a_second_variant_is_refused(tiny_backbone):
    lk.apply_lora(tiny_backbone, rank=4, targets=("value",))
    before = lk.trainable_summary(tiny_backbone)
    with pytest.raises(
        ValueError, match="already has LoRA with .*'variant': 'lora'.* got .*'variant': 'dora'"
    ):
        lk.apply_lora(tiny_backbone, rank=4, targets=("query",), variant="dora")
    assert sorted(lk.lora_layers(tiny_backbone)) == [
        "transformer_layer_0/value",
        "transformer_layer_1/value",
    ]
    assert lk.trainable_summary(tiny_backbone) == before


def test_unknown_variant_is_refused(tiny_backbone):
    with pytest.raises(ValueError, match="Unknown LoRA variant 'vera'. Known variants: lora, dora"):
        lk.apply_lora(tiny_backbone, variant="vera")
    assert lk.lora_layers(tiny_backbone) == {}


def test_compare_mode_dora_applies_dora(tiny_lm):
    MODES["dora"](tiny_lm, {"rank": 2, "alpha": 4.0, "targets": ["query", "value"]})
    assert {w.variant for w in lk.lora_layers(tiny_lm).values()} == {"dora"}


def test_estimate_counts_doras_extra_tensors(tiny_lm):
    lora_lm = make_tiny_lm()
    lk.apply_lora(lora_lm, rank=4, targets=("query", "ffn_in"))
    lk.apply_lora(tiny_lm, rank=4, targets=("query", "ffn_in"), variant="dora")
    lora = estimate_for_model(lora_lm, batch_size=2, sequence_length=16)
    dora = estimate_for_model(tiny_lm, batch_size=2, sequence_length=16)
    assert "dora" not in lora
    units = LAYERS * (HIDDEN + FFN)
    # Unscaled outputs (batch x seq per unit), norms and scales; V and V**2 of ffn_in's kernel.
    assert dora["dora"] == ((2 * 16 + 2) * units + 2 * HIDDEN * FFN) * 4
    # Magnitudes: weights, gradients and two AdamW slots, like any trainable weight.
    assert dora["optimizer_state"] - lora["optimizer_state"] == 2 * units * 4
    assert dora["activations"] == lora["activations"]
    assert dora["total"] == sum(value for key, value in dora.items() if key != "total")
    assert explain_estimate(dora)[-1].startswith("dora: ")
    lk.merge_lora(tiny_lm)  # merged, DoRA computes no norm
    assert "dora" not in estimate_for_model(tiny_lm, batch_size=2, sequence_length=16)


@pytest.mark.large
def test_train_one_measures_a_dora_run(tmp_path, monkeypatch):
    """What a `compare --modes dora` child runs, in this process."""
    from test_compare import tiny_spec

    from lora_keras.experiments.train_one import train_one

    monkeypatch.setenv("LORA_KERAS_CACHE", str(tmp_path))
    record = train_one(*read_job(tiny_spec("dora", mode="dora")), verbose=0)
    assert (record["status"], record["mode"], record["rank"]) == ("ok", "dora", 2)
    # gpt2_tiny: 4 blocks, query and value each (128, 4, 32): A, B at rank 2, 4 x 32 magnitudes.
    assert record["trainable_params"] == 4 * 2 * (128 * 2 + 2 * 4 * 32 + 4 * 32)
    assert record["estimate"]["dora"] > 0 and len(record["loss"]) == 2
