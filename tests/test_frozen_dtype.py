"""The frozen_dtype lever: a half-precision frozen model beside float32 adapters."""

import json

import keras
import numpy as np
import pytest
from conftest import (
    TINY_GPT2,
    make_tiny_lm,
    next_token_dataset,
    randomize_lora_b,
    tiny_compare,
    token_batch,
    train_losses,
)
from keras.ops import convert_to_numpy as to_numpy

import lora_keras as lk
from lora_keras import cli
from lora_keras.layers.base_lora_layer import adapter_policy
from lora_keras.levers.options import (
    LOSS_TOLERANCE,
    check_mode_options,
    check_options,
    loss_scaled,
    options_label,
    options_sweep_runs,
)
from lora_keras.models.architectures import GPT2_ARCHITECTURES

pytestmark = pytest.mark.backends


def test_adapters_of_a_half_precision_layer_are_stored_in_float32():
    lm = make_tiny_lm(dtype="bfloat16")
    wrappers = lk.apply_lora(lm, rank=2)
    assert len(wrappers) == 2 * TINY_GPT2["num_layers"]  # query and value of each block
    for wrapper in wrappers:
        assert wrapper.original_layer.kernel.dtype == "bfloat16"
        assert wrapper.lora_kernel_a.dtype == "float32"
        assert wrapper.lora_kernel_b.dtype == "float32"
        assert wrapper.compute_dtype == "bfloat16"  # the block's activations stay half
    assert {variable.dtype for variable in lm.trainable_variables} == {"float32"}
    x, _ = next_token_dataset()
    assert keras.backend.standardize_dtype(lm.backbone(x).dtype) == "bfloat16"


@pytest.mark.parametrize(
    "policy, expected",
    [
        ("bfloat16", "mixed_bfloat16"),
        ("float16", "mixed_float16"),
        ("float32", "float32"),
        ("mixed_bfloat16", "mixed_bfloat16"),  # already float32 variables
    ],
)
def test_adapter_policy(policy, expected):
    assert adapter_policy(keras.DTypePolicy(policy)).name == expected


def test_dora_magnitude_stays_float32_beside_a_bfloat16_layer():
    lm = make_tiny_lm(dtype="bfloat16")
    (wrapper, *_) = lk.apply_lora(lm, rank=2, variant="dora")
    assert wrapper.magnitude.dtype == "float32"
    assert {variable.dtype for variable in lm.trainable_variables} == {"float32"}


def test_a_bfloat16_frozen_model_trains_to_the_float32_loss_within_tolerance():
    plain_lm = make_tiny_lm()
    lk.apply_lora(plain_lm, rank=2)
    plain = train_losses(plain_lm)
    half_lm = make_tiny_lm(dtype="bfloat16")
    lk.apply_lora(half_lm, rank=2)
    half = train_losses(half_lm)
    assert plain[-1] < plain[0]  # it trained
    np.testing.assert_allclose(half, plain, rtol=LOSS_TOLERANCE["frozen_dtype"])
    assert half != plain  # the frozen weights were rounded: not the same run twice


def test_the_estimate_counts_frozen_weights_at_their_own_dtype():
    lm = make_tiny_lm(dtype="bfloat16")
    lk.apply_lora(lm, rank=2)
    counts = lk.trainable_summary(lm)
    estimate = lk.estimate_for_model(lm, batch_size=2, sequence_length=12)
    frozen = counts["total"] - counts["trainable"]
    assert estimate["weights"] == counts["trainable"] * 4 + frozen * 2
    assert estimate["gradients"] == counts["trainable"] * 4  # float32 adapters
    assert lk.stored_weight_bytes(lm) == estimate["weights"]


@pytest.mark.parametrize(
    "options, message",
    [
        ({"frozen_dtype": "int8"}, "frozen_dtype must be one of"),
        (
            {"frozen_dtype": "bfloat16", "mixed_precision": "bfloat16"},
            r"frozen_dtype \(--frozen-dtype\) and mixed_precision \(--mixed-precision\) cannot",
        ),
    ],
)
def test_bad_frozen_dtypes_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        check_options(**options)


@pytest.mark.parametrize(
    "mode, why",
    [
        ("full", "every weight trains, and AdamW's small updates round away"),
        ("keras_lora", "Keras's enable_lora leaves each wrapped layer's bias trainable"),
        ("qlora", "QLoRA's block kernels are already 4-bit"),
        ("mixlora", "it was not measured beside a half-precision model"),
    ],
)
def test_modes_that_cannot_keep_float32_weights_are_refused(mode, why):
    options = check_options(frozen_dtype="bfloat16")
    with pytest.raises(ValueError, match=rf"mode '{mode}': {why}.* modes lora, dora"):
        check_mode_options(mode, options)
    assert check_mode_options("dora", options) is options


def test_a_refused_mode_is_refused_before_any_run(tmp_path):
    with pytest.raises(ValueError, match=r"--frozen-dtype\) cannot be honoured for mode 'full'"):
        lk.compare(preset="gpt2_tiny", frozen_dtype="bfloat16", out=str(tmp_path / "x"))
    assert not (tmp_path / "x").exists()


def test_label_cli_and_sweep_name_the_frozen_dtype():
    assert options_label(check_options(frozen_dtype="bfloat16", remat=True)) == (
        "frozen_bfloat16+remat"
    )
    args = cli.build_parser().parse_args(["compare", "--frozen-dtype", "bfloat16"])
    assert cli._run_arguments(args)["frozen_dtype"] == "bfloat16"
    assert cli.build_parser().parse_args(["sweep"]).frozen_dtype is None
    assert "lora+frozen_bfloat16" in [name for name, *_ in options_sweep_runs("lora", 4)]
    # Full fine-tuning cannot honour it, so its sweep leaves it out rather than fail.
    assert not any("frozen" in name for name, *_ in options_sweep_runs("full", None))


@pytest.mark.large
def test_a_frozen_dtype_run_is_recorded(tmp_path, monkeypatch):
    out = tmp_path / "report"
    tiny_compare(tmp_path, monkeypatch, frozen_dtype="bfloat16", chunked_loss=True)
    saved = json.loads((out / "results.json").read_text())
    (run,) = saved["runs"]
    assert run["status"] == "ok", run.get("error")
    assert run["options"] == check_options(frozen_dtype="bfloat16", chunked_loss=True)
    assert saved["config"]["frozen_dtype"] == "bfloat16"
    # Query and value of each block: A (hidden x 2) and B (2 x hidden), stored in 4 bytes each;
    # every frozen weight in 2.
    shape = GPT2_ARCHITECTURES["gpt2_tiny"]
    lora_weights = 2 * shape["num_layers"] * 2 * (2 * shape["hidden_dim"])
    assert run["trainable_params"] == lora_weights
    frozen = run["total_params"] - lora_weights
    assert run["stored_weight_bytes"] == frozen * 2 + lora_weights * 4
    assert "lora r=2 frozen_bfloat16+chunked_loss" in (out / "report.md").read_text()


def test_a_float16_frozen_model_scales_its_loss_as_mixed_float16_does():
    sgd = keras.optimizers.SGD(0.1)
    scaled = loss_scaled(sgd, check_options(frozen_dtype="float16"))
    assert isinstance(scaled, keras.optimizers.LossScaleOptimizer)
    assert scaled.inner_optimizer is sgd
    # bfloat16 has float32's exponent range: nothing to scale.
    assert loss_scaled(sgd, check_options(frozen_dtype="bfloat16")) is sgd
    assert loss_scaled(sgd, check_options()) is sgd


def half_lora_lm(variant="lora"):
    """Tiny GPT-2 in bfloat16 with trained-looking float32 adapters."""
    lm = make_tiny_lm(dtype="bfloat16")
    randomize_lora_b(lk.apply_lora(lm, rank=2, variant=variant))
    return lm


def test_merge_adds_in_float32_and_unmerge_is_within_bfloat16_rounding():
    lm = half_lora_lm()
    x = token_batch()
    expected = to_numpy(lm(x))
    layers = lk.lora_layers(lm).values()
    kernels = [to_numpy(layer.original_layer.kernel).astype("float32") for layer in layers]
    updates = [to_numpy(layer.delta_kernel()) for layer in layers]
    lk.merge_lora(lm)
    for layer, kernel, update in zip(layers, kernels, updates, strict=True):
        merged = to_numpy(layer.original_layer.kernel).astype("float32")
        # W + update, summed in float32 and rounded once to bfloat16's 8 bits.
        np.testing.assert_array_less(
            np.abs(merged - (kernel + update)), 2**-8 * np.abs(kernel + update) + 1e-30
        )
    np.testing.assert_allclose(to_numpy(lm(x)), expected, rtol=0.05, atol=0.05)
    lk.unmerge_lora(lm)
    for layer, kernel, update in zip(layers, kernels, updates, strict=True):
        unmerged = to_numpy(layer.original_layer.kernel)
        assert unmerged.dtype == "bfloat16"
        # Two roundings: the merged kernel's, to 8 bits of W + update, then W's own.
        bound = 2**-8 * (np.abs(kernel + update) + np.abs(kernel)) + 1e-30
        np.testing.assert_array_less(np.abs(unmerged.astype("float32") - kernel), bound)


def test_a_bfloat16_lora_model_survives_a_keras_file_and_an_adapter_file(tmp_path):
    lm = half_lora_lm()
    x = token_batch()
    expected = to_numpy(lm(x))
    lm.save(tmp_path / "half.keras")
    restored = keras.saving.load_model(tmp_path / "half.keras")
    assert {v.dtype for v in restored.trainable_variables} == {"float32"}
    np.testing.assert_array_equal(to_numpy(restored(x)), expected)
    lk.save_adapter(lm, tmp_path / "half.lora.h5")
    fresh = make_tiny_lm(dtype="bfloat16")
    lk.load_adapter(fresh, tmp_path / "half.lora.h5")
    np.testing.assert_array_equal(to_numpy(fresh(x)), expected)


def test_dora_beside_a_bfloat16_kernel_starts_as_a_no_op_and_trains_like_float32():
    lm = make_tiny_lm(dtype="bfloat16")
    (dora, *_) = lk.apply_lora(lm, rank=2, variant="dora")
    hidden = keras.random.normal((2, 12, TINY_GPT2["hidden_dim"]), seed=1, dtype="bfloat16")
    # m = ||W|| and ||V|| are both taken in float32 from the same W, so m / ||V|| is 1 but for
    # m's autocast to bfloat16 in the call: the output moves by at most that rounding.
    before = to_numpy(dora.original_layer(hidden)).astype("float32")
    after = to_numpy(dora(hidden)).astype("float32")
    np.testing.assert_array_less(np.abs(after - before), 2**-6 * np.abs(before) + 1e-30)
    plain_lm = make_tiny_lm()
    lk.apply_lora(plain_lm, rank=2, variant="dora")
    np.testing.assert_allclose(
        train_losses(lm), train_losses(plain_lm), rtol=LOSS_TOLERANCE["frozen_dtype"]
    )


def test_a_float16_frozen_model_trains_with_its_loss_scaled():
    lm = make_tiny_lm(dtype="float16")
    lk.apply_lora(lm, rank=2)
    losses = train_losses(lm)
    assert np.isfinite(losses).all() and losses[-1] < losses[0]


def test_a_swept_precision_lever_replaces_the_experiments_own():
    experiment = check_options(mixed_precision="bfloat16")
    for name, _, _, own in options_sweep_runs("lora", 4):
        options = check_options(**dict(experiment, **own))  # no clash, whichever is swept
        if name == "lora+frozen_bfloat16":
            assert options["frozen_dtype"] == "bfloat16" and options["mixed_precision"] is None


def test_an_options_sweep_takes_no_lever_of_its_own(tmp_path):
    with pytest.raises(
        ValueError,
        match=r"options_sweep \(--options-sweep\) turns each lever on alone .* got "
        r"frozen_dtype \(--frozen-dtype\)\. Drop those",
    ):
        lk.compare(
            preset="gpt2_tiny",
            modes=("lora",),
            options_sweep=True,
            frozen_dtype="bfloat16",
            out=str(tmp_path / "x"),
        )
    assert not (tmp_path / "x").exists()


def test_mixlora_experts_are_stored_in_float32_beside_a_bfloat16_block():
    lm = make_tiny_lm(dtype="bfloat16")
    lk.apply_mixlora(lm, num_experts=2, top_k=1, rank=2)
    assert {variable.dtype for variable in lm.trainable_variables} == {"float32"}
