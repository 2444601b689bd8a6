"""MixLoRA in a GPT-2: surgery, training, statistics, refusals, adapters and `.keras` files."""

import importlib
import inspect
import json
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import TINY_GPT2, make_tiny_lm, next_token_dataset, randomize_lora_b, token_batch
from layer_test_case import count

import lora_keras as lk
import lora_keras.mixlora.apply
from lora_keras.experiments.job_file import read_job
from lora_keras.experiments.train_one import train_one
from lora_keras.mixlora.settings import MIXLORA_DEFAULTS, MIXLORA_VARIANTS
from lora_keras.report.expert_loads import expert_loads_figure

HIDDEN, INTER = TINY_GPT2["hidden_dim"], TINY_GPT2["intermediate_dim"]
LAYERS = TINY_GPT2["num_layers"]
numpy = keras.ops.convert_to_numpy  # any backend's tensors


def expert_weights(experts, rank):
    router = HIDDEN * experts
    return router + experts * (HIDDEN * rank + rank * INTER + INTER * rank + rank * HIDDEN)


def randomize_experts(model, seed=0):
    rng = np.random.default_rng(seed)
    for block in lk.mixlora_layers(model).values():
        for variable in (block.expert_in_b, block.expert_out_b):
            variable.assign(rng.normal(0.0, 0.1, tuple(variable.shape)).astype("float32"))


def compile_lm(lm, learning_rate=1e-2):
    lm.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )


def snapshot(lm):
    backbone = lm.backbone
    layers = [
        (block.__class__, block._feedforward_intermediate_dense, block._feedforward_output_dense)
        for block in backbone.transformer_layers
    ]
    return backbone.__class__, layers, [v.trainable for v in lm.weights]


@pytest.mark.parametrize("variant", ["lora", "dora"])
def test_apply_mixlora_replaces_every_ffn_and_changes_no_output(variant):
    lm = make_tiny_lm()
    x = token_batch()
    before = numpy(lm(x))
    blocks = lk.apply_mixlora(lm, num_experts=4, top_k=2, rank=4, variant=variant)
    assert len(blocks) == LAYERS and list(lk.mixlora_layers(lm)) == [
        f"transformer_layer_{i}/ffn" for i in range(LAYERS)
    ]
    np.testing.assert_allclose(numpy(lm(x)), before, rtol=1e-5, atol=1e-5)
    magnitudes = 4 * (INTER + HIDDEN) if variant == "dora" else 0
    assert lk.trainable_summary(lm)["trainable"] == LAYERS * (expert_weights(4, 4) + magnitudes)
    trainable = {id(v) for v in lm.trainable_weights}
    assert trainable == {id(v) for b in blocks for v in b.adapter_weights().values()}


@pytest.mark.parametrize("lora_first", [True, False])
def test_attention_lora_combines_in_either_order(lora_first):
    lm = make_tiny_lm()
    steps = [
        lambda: lk.apply_lora(lm, rank=2, targets=("query", "value")),
        lambda: lk.apply_mixlora(lm, num_experts=4, rank=4),
    ]
    for step in steps if lora_first else steps[::-1]:
        step()
    lora = LAYERS * 2 * (HIDDEN * 2 + 2 * HIDDEN)
    assert lk.trainable_summary(lm)["trainable"] == LAYERS * expert_weights(4, 4) + lora
    assert isinstance(lm.backbone, lk.AdaptedGPT2Backbone)
    assert len(lk.lora_layers(lm)) == LAYERS * 2


def test_fit_lowers_the_loss_and_trains_only_routers_experts_and_attention_lora():
    lm = make_tiny_lm()
    randomize_lora_b(lk.apply_lora(lm, rank=2))
    lk.apply_mixlora(lm, num_experts=4, rank=4)
    randomize_experts(lm)
    compile_lm(lm)
    x, y = next_token_dataset(batch_size=4)
    before = {v.path: v.numpy().copy() for v in lm.weights}
    history = lm.fit(x, y, epochs=8, batch_size=4, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0] - 0.05
    trainable = {id(v) for v in lm.trainable_weights}
    for variable in lm.weights:
        changed = not np.array_equal(variable.numpy(), before[variable.path])
        if "expert_counts" in variable.path:
            assert changed and id(variable) not in trainable  # statistics, not training
        else:
            assert changed == (id(variable) in trainable), variable.path


def test_expert_loads_count_training_tokens_and_skip_padding():
    lm = make_tiny_lm()
    lk.apply_mixlora(lm, num_experts=4, top_k=2, rank=4)
    x, y = next_token_dataset(batch_size=2)
    x["padding_mask"][:, 8:] = 0  # 2 x 8 real tokens, 2 x 4 padding
    lm(x)  # not training: nothing counted
    assert all(loads == [0.0] * 4 for loads in lk.expert_loads(lm).values())
    compile_lm(lm)
    lm.fit(x, y, epochs=1, batch_size=2, verbose=0)
    for block in lk.mixlora_layers(lm).values():
        assert block.expert_counts.numpy().sum() == 2 * 8 * 2  # tokens x top_k
    for loads in lk.expert_loads(lm).values():
        assert len(loads) == 4 and np.isclose(sum(loads), 1.0)


@pytest.mark.parametrize(
    ("scope", "losses", "balanced"), [("model", 1, 2.0), ("block", LAYERS, 1.0)]
)
def test_aux_loss_is_added_to_the_model_losses(scope, losses, balanced):
    lm = make_tiny_lm()
    lk.apply_mixlora(lm, num_experts=4, rank=4, aux_loss_coef=0.5, aux_loss_scope=scope)
    lm(token_batch())
    # One loss over every block's routing (the MixLoRA reference's), or one a block.
    assert len(lm.losses) == losses
    # Balanced routing gives coef * E * sum(k/E * 1/E) = coef * k over the model, and coef * 1
    # a block (divided by k); any imbalance gives more.
    assert all(float(loss) >= 0.5 * balanced - 1e-6 for loss in lm.losses)


def _mixtral_balance(logits_per_block, mask, num_experts, top_k):
    """The MixLoRA reference's loss (Mixtral's, over every block's router logits at once),
    transcribed with TensorFlow ops from its definition, for a value and a gradient."""
    import tensorflow as tf

    logits = tf.concat(logits_per_block, axis=0)  # (blocks * tokens, E)
    weights = tf.tile(tf.reshape(tf.cast(mask, "float32"), (-1,)), [len(logits_per_block)])
    probabilities = tf.nn.softmax(logits, axis=-1)
    _, chosen = tf.math.top_k(probabilities, top_k)
    expert_mask = tf.one_hot(chosen, num_experts)  # (blocks * tokens, k, E)
    tokens_per_expert = tf.reduce_sum(expert_mask * weights[:, None, None], 0) / tf.reduce_sum(
        weights
    )
    router_prob = tf.reduce_sum(probabilities * weights[:, None], 0) / tf.reduce_sum(weights)
    return num_experts * tf.reduce_sum(tokens_per_expert * router_prob[None])


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.GradientTape")
def test_the_default_loss_is_the_mixlora_references_in_value_and_gradient():
    import tensorflow as tf

    lm = make_tiny_lm()
    blocks = list(lk.apply_mixlora(lm, num_experts=4, top_k=2, rank=4))
    assert blocks[0].aux_loss_coef == 0.001 and blocks[0].aux_loss_scope == "model"
    rng = np.random.default_rng(0)
    for block in blocks:  # routers far from uniform, so the gradient is not tiny
        block.router.kernel.assign(rng.normal(0, 0.5, block.router.kernel.shape))
    logits = []
    for block in blocks:
        call = block.router.call
        block.router.call = lambda x, call=call, **kw: logits.append(call(x, **kw)) or logits[-1]
    batch = token_batch()
    batch["padding_mask"][0, -4:] = 0
    routers = [block.router.kernel for block in blocks]
    with tf.GradientTape(persistent=True) as tape:
        lm(batch)
        ours = tf.add_n(lm.losses)
        reference = 0.001 * _mixtral_balance(logits, batch["padding_mask"], 4, 2)
    np.testing.assert_allclose(float(ours), float(reference), rtol=1e-5)
    gradients = zip(tape.gradient(ours, routers), tape.gradient(reference, routers), strict=True)
    for got, expected in gradients:
        assert np.abs(expected.numpy()).max() > 0
        np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(top_k=9), "top_k must be an integer from 1 to num_experts=8, got top_k=9"),
        (dict(num_experts=0, top_k=1), "MixLoRA needs at least 1 expert, got num_experts=0"),
        (dict(rank=65), "MixLoRA rank 65 is larger than the smallest dimension (64)"),
        (dict(variant="vera"), "Unknown MixLoRA variant 'vera'. Known: lora, dora"),
        (dict(alpha=float("nan")), "MixLoRA alpha must be a finite number above 0"),
        (
            dict(alpha=-16.0),
            "(updates are scaled by alpha / rank), got alpha=-16.0",
        ),
    ],
)
def test_bad_arguments_change_nothing(kwargs, message):
    lm = make_tiny_lm()
    before = snapshot(lm)
    with pytest.raises(ValueError) as error:
        lk.apply_mixlora(lm, **kwargs)
    assert message in str(error.value)
    assert snapshot(lm) == before


def test_applied_twice_is_refused():
    lm = make_tiny_lm()
    lk.apply_mixlora(lm, num_experts=2, top_k=1, rank=2)
    before = snapshot(lm)
    with pytest.raises(ValueError, match="MixLoRA is already applied"):
        lk.apply_mixlora(lm)
    assert snapshot(lm) == before


def test_lora_on_the_ffn_and_a_mixture_exclude_each_other():
    lm = make_tiny_lm()
    lk.apply_lora(lm, rank=2, targets=("value", "ffn_out"))
    with pytest.raises(ValueError, match=r"LoRA already wraps \['transformer_layer_0/ffn_out'"):
        lk.apply_mixlora(lm)
    other = make_tiny_lm()
    lk.apply_mixlora(other, num_experts=2, top_k=1, rank=2)
    before = snapshot(other)
    with pytest.raises(ValueError, match="the feed-forward block is a MixLoRA mixture"):
        lk.apply_lora(other, targets=("query", "ffn_in"))
    assert snapshot(other) == before


@pytest.mark.parametrize("function", [lk.merge_lora, lk.unwrap_lora])
def test_merge_and_unwrap_are_refused_with_the_reason(function):
    lm = make_tiny_lm()
    lk.apply_lora(lm, rank=2)
    lk.apply_mixlora(lm, num_experts=2, top_k=1, rank=2)
    before = snapshot(lm)
    with pytest.raises(ValueError, match="a routed mixture has no single dense equivalent"):
        function(lm)
    assert snapshot(lm) == before
    assert not any(layer.merged for layer in lk.lora_layers(lm).values())


@pytest.mark.parametrize("variant", ["lora", "dora"])
def test_keras_round_trip(variant, tmp_path):
    lm = make_tiny_lm()
    randomize_lora_b(lk.apply_lora(lm, rank=2))
    lk.apply_mixlora(lm, num_experts=4, rank=4, variant=variant)
    randomize_experts(lm)
    x = token_batch()
    lm.save(tmp_path / "mix.keras")
    restored = keras.saving.load_model(tmp_path / "mix.keras")
    np.testing.assert_allclose(numpy(restored(x)), numpy(lm(x)), rtol=1e-5, atol=1e-5)
    assert lk.mixlora_layers(restored) and len(lk.lora_layers(restored)) == 2 * LAYERS
    assert count(restored.trainable_weights) == count(lm.trainable_weights)


@pytest.mark.parametrize("with_lora", [True, False])
def test_adapter_round_trip_carries_routers_and_experts(with_lora, tmp_path):
    lm = make_tiny_lm()
    if with_lora:
        randomize_lora_b(lk.apply_lora(lm, rank=2))
    lk.apply_mixlora(lm, num_experts=4, rank=4, variant="dora")
    randomize_experts(lm)
    x = token_batch()
    expected = numpy(lm(x))
    path = tmp_path / "mix.lora.h5"
    lk.save_adapter(lm, path)
    fresh = make_tiny_lm()
    assert not np.allclose(numpy(fresh(x)), expected, atol=1e-4)
    settings = lk.load_adapter(fresh, path)
    assert settings["mixlora"] == dict(lk.mixlora.MIXLORA_DEFAULTS, num_experts=4, rank=4) | {
        "variant": "dora"
    }
    assert ("rank" in settings) == with_lora
    np.testing.assert_allclose(numpy(fresh(x)), expected, rtol=1e-5, atol=1e-5)


def test_adapter_with_other_mixture_settings_is_refused(tmp_path):
    lm = make_tiny_lm()
    lk.apply_mixlora(lm, num_experts=4, rank=4)
    path = tmp_path / "mix.lora.h5"
    lk.save_adapter(lm, path)
    other = make_tiny_lm()
    lk.apply_mixlora(other, num_experts=2, top_k=1, rank=4)
    with pytest.raises(ValueError, match="Wrong MixLoRA settings: the adapter has"):
        lk.load_adapter(other, path)
    with_ffn_lora = make_tiny_lm()
    lk.apply_lora(with_ffn_lora, rank=2, targets=("ffn_in",))
    with pytest.raises(ValueError, match=r"this model has LoRA on \['transformer_layer_0/ffn_in'"):
        lk.load_adapter(with_ffn_lora, path)
    assert not lk.mixlora_layers(with_ffn_lora)


def test_mixlora_run_records_settings_and_loads(tmp_path, monkeypatch):
    monkeypatch.setenv("LORA_KERAS_CACHE", str(tmp_path))
    spec = {
        "mode": "mixlora",
        "preset": "gpt2_tiny",
        "weights": "random",
        "data": "embedded",
        "steps": 2,
        "batch_size": 2,
        "sequence_length": 16,
        "rank": 2,
        "alpha": 4.0,
        "targets": ["query", "value"],
        "learning_rate": 1e-3,
        "seed": 0,
        "mixlora": {"num_experts": 4},
        "sample_prompts": [],
        "verbose": 0,
    }
    record = train_one(*read_job(spec), verbose=0)
    assert record["mixlora"] == dict(lk.mixlora.MIXLORA_DEFAULTS, num_experts=4)
    assert record["rank"] == 8  # MixLoRA's rank, not compare's LoRA rank
    assert record["alpha"] == 16.0  # and its alpha
    assert len(record["expert_loads"]) == 4  # gpt2_tiny's layers
    assert all(np.isclose(sum(loads), 1.0) for loads in record["expert_loads"].values())
    results = {"runs": [dict(record, status="ok")]}
    assert expert_loads_figure(results, "loads") is not None
    assert expert_loads_figure({"runs": [{"mode": "lora", "status": "ok"}]}, "loads") is None


def test_compare_records_the_mixlora_settings_it_uses(monkeypatch):
    # The package exports the function `compare` under its module's name.
    compare_module = importlib.import_module("lora_keras.experiments.compare")
    seen = {}
    monkeypatch.setattr(
        compare_module, "run_experiment", lambda spec, **_: seen.update(spec.config())
    )
    lk.compare(preset="gpt2_tiny", modes=("lora", "mixlora"), mixlora={"top_k": 1})
    assert seen["mixlora"] == dict(lk.mixlora.MIXLORA_DEFAULTS, top_k=1)
    lk.compare(preset="gpt2_tiny", modes=("lora",))
    assert seen["mixlora"] is None


def test_mixed_precision_mixdora_trains_with_a_float32_router_and_generates():
    lm = make_tiny_lm(dtype="mixed_bfloat16")
    blocks = lk.apply_mixlora(lm, num_experts=4, rank=4, variant="dora")
    assert blocks[0].router.kernel.dtype == "float32"
    assert blocks[0].router.compute_dtype == "float32"
    assert blocks[0].compute_dtype == "bfloat16"
    compile_lm(lm)
    x, y = next_token_dataset(batch_size=2)
    history = lm.fit(x, y, epochs=2, batch_size=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    prompt = {"token_ids": np.zeros((1, 8), "int32"), "padding_mask": np.zeros((1, 8), "int32")}
    prompt["padding_mask"][0, :2] = 1
    generated = lm.generate(prompt, stop_token_ids=None)["token_ids"]
    assert generated.shape == (1, 8)


def test_the_report_shows_the_expert_loads(tmp_path):
    run = {
        "mode": "mixlora",
        "status": "ok",
        "rank": 8,
        "mixlora": {"num_experts": 2, "top_k": 1},
        "expert_loads": {"transformer_layer_0/ffn": [0.25, 0.75]},
    }
    (tmp_path / "results.json").write_text(
        json.dumps({"schema_version": 1, "environment": {}, "config": {}, "runs": [run]})
    )
    report = (Path(lk.write_report(tmp_path))).read_text()
    assert "![MixLoRA expert loads per layer](expert_loads.png)" in report
    assert (
        "| mixlora r=8 | num_experts 2, top_k 1 | transformer_layer_0 | 0.250 | 0.750 |" in report
    )
    assert (tmp_path / "expert_loads.png").exists()


def _defaults(function):
    parameters = inspect.signature(function).parameters.values()
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}


def test_mixlora_defaults_are_apply_mixlora_defaults_and_the_layers():
    assert _defaults(lk.apply_mixlora) == MIXLORA_DEFAULTS
    # The layer (ground floor) keeps its own defaults; they must not drift from the settings.
    layer_defaults = _defaults(lk.MixLoraFeedForward.__init__)
    assert layer_defaults == {k: v for k, v in MIXLORA_DEFAULTS.items() if k != "variant"}
    assert lk.mixlora.MIXLORA_DEFAULTS is MIXLORA_DEFAULTS
    assert tuple(lora_keras.mixlora.apply.VARIANTS) == MIXLORA_VARIANTS


def test_expert_counts_stay_exact_under_mixed_precision():
    lm = make_tiny_lm(dtype="mixed_bfloat16")
    lk.apply_mixlora(lm, num_experts=4, top_k=2, rank=4)
    for block in lk.mixlora_layers(lm).values():
        block.expert_counts.assign([257.0, 0.0, 0.0, 0.0])  # bfloat16 holds 256 or 258
    compile_lm(lm)
    x, y = next_token_dataset(batch_size=2)
    lm.train_on_batch(x, y)
    for block in lk.mixlora_layers(lm).values():
        assert block.expert_counts.numpy().sum() == 257 + 2 * 12 * 2  # tokens x top_k added
