"""The levers: XLA, mixed precision, rematerialisation, the chunked loss, Keras's own LoRA."""

import json

import keras
import keras_hub
import numpy as np
import pytest
from conftest import (
    TINY_GPT2,
    make_tiny_lm,
    next_token_dataset,
    randomize_lora_b,
    tiny_compare,
    train_losses,
)

import lora_keras as lk
from lora_keras import cli
from lora_keras.experiments.run_spec import PlannedRun, RunSpec
from lora_keras.experiments.train_one import MODES, _alpha
from lora_keras.levers.options import (
    LOSS_TOLERANCE,
    OPTIONS,
    check_options,
    options_label,
    options_sweep_runs,
    refuse_unhonoured,
    rematerialise_blocks,
    set_precision_policy,
)
from lora_keras.report.levers_markdown import (
    goals_section,
    levers_section,
    loss_check,
    paid_off_after,
    plain_run,
)


def dropout_lora_lm(seed=0):
    """Tiny GPT-2 with LoRA and dropout on, so rematerialisation must redraw the same masks."""
    keras.utils.set_random_seed(seed)  # before LoRA too: A draws from the global seed
    backbone = keras_hub.models.GPT2Backbone(**TINY_GPT2, dropout=0.3)
    lm = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    lk.apply_lora(lm, rank=2)
    return lm


def test_chunked_loss_equals_the_plain_loss_value_and_gradient():
    tf = pytest.importorskip("tensorflow")
    if keras.backend.backend() != "tensorflow":
        pytest.skip("the gradient is compared with TensorFlow's tape")
    lm = make_tiny_lm()
    randomize_lora_b(lk.apply_lora(lm, rank=2))  # A's gradient is zero while B is
    x, y = next_token_dataset()
    weights = np.ones(y.shape, dtype="float32")
    weights[1, -4:] = 0.0
    chunked = lk.ChunkedLossCausalLM(lm.backbone, chunk_size=5)  # 12 positions: 5, 5, 2
    chunked.compile(optimizer="sgd")
    plain_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape(persistent=True) as tape:
        plain = plain_loss(y, lm(x), sample_weight=weights)
        ours = chunked.compute_loss(x, y, chunked(x), sample_weight=weights)
    assert tuple(chunked(x).shape) == (2, 12, TINY_GPT2["hidden_dim"])  # hidden states only
    np.testing.assert_allclose(float(ours), float(plain), rtol=1e-6)
    variables = lm.trainable_variables
    assert len(variables) == 8  # A and B of query and value in 2 blocks
    for a, b in zip(tape.gradient(plain, variables), tape.gradient(ours, variables), strict=True):
        assert float(tf.reduce_max(tf.abs(a))) > 0  # the test cannot pass on zeros
        np.testing.assert_allclose(b.numpy(), a.numpy(), atol=1e-6)


def test_chunked_loss_trains_with_fit_like_the_plain_loss():
    plain = train_losses(make_tiny_lm())
    chunked = train_losses(None, model=lk.ChunkedLossCausalLM(make_tiny_lm().backbone, 4))
    np.testing.assert_allclose(chunked, plain, rtol=LOSS_TOLERANCE["chunked_loss"])
    assert plain[-1] < plain[0]


def test_chunked_loss_refuses_a_loss_and_a_bad_chunk_size():
    lm = make_tiny_lm()
    with pytest.raises(ValueError, match="compile it without `loss`"):
        lk.ChunkedLossCausalLM(lm.backbone).compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="chunk_size must be an integer of at least 1, got 0"):
        lk.ChunkedLossCausalLM(lm.backbone, chunk_size=0)


def test_chunked_loss_config_round_trip():
    model = lk.ChunkedLossCausalLM(make_tiny_lm().backbone, chunk_size=7, name="chunked")
    restored = lk.ChunkedLossCausalLM.from_config(model.get_config())
    assert restored.chunk_size == 7 and restored.name == "chunked"
    assert restored.backbone.num_layers == TINY_GPT2["num_layers"]


@pytest.mark.backends
def test_remat_trains_to_the_same_loss_with_dropout():
    plain = train_losses(dropout_lora_lm())
    remat_lm = dropout_lora_lm()
    rematerialise_blocks(remat_lm.backbone)
    remat = train_losses(remat_lm)
    np.testing.assert_allclose(remat, plain, rtol=LOSS_TOLERANCE["remat"])
    assert len(set(plain)) == 3  # it trained
    other_masks = dropout_lora_lm()
    for seed in other_masks.backbone.transformer_layers[0].non_trainable_variables:
        seed.assign(keras.ops.convert_to_numpy(seed.value) + 7)  # only dropout seeds there
    assert train_losses(other_masks) != plain  # the masks count: the test can fail


@pytest.mark.backends
def test_remat_on_jax_puts_each_block_in_a_checkpoint_and_writes_no_state_inside():
    jax = pytest.importorskip("jax")
    if keras.backend.backend() != "jax":
        pytest.skip("jax.checkpoint is JAX's")
    lm = dropout_lora_lm()
    rematerialise_blocks(lm.backbone)
    x, y = next_token_dataset()
    trainable = [v.value for v in lm.trainable_variables]
    frozen = [v.value for v in lm.non_trainable_variables]

    def mean_output(trainable):
        outputs, frozen_after = lm.stateless_call(trainable, frozen, x, training=True)
        return keras.ops.mean(outputs), frozen_after

    jaxpr = str(jax.make_jaxpr(jax.grad(mean_output, has_aux=True))(trainable))
    assert jaxpr.count("remat") >= TINY_GPT2["num_layers"]
    _, frozen_after = mean_output(trainable)
    frozen_names = [variable.name for variable in lm.non_trainable_variables]
    seeds = [i for i, name in enumerate(frozen_names) if name == "seed_generator_state"]
    assert seeds and all(  # the seeds advanced outside the checkpoint, as without remat
        np.any(np.asarray(frozen_after[i]) != np.asarray(frozen[i])) for i in seeds
    )


def test_remat_without_dropout_trains_to_the_same_loss():
    plain = train_losses(make_tiny_lm())
    remat_lm = make_tiny_lm()
    rematerialise_blocks(remat_lm.backbone)
    np.testing.assert_allclose(train_losses(remat_lm), plain, rtol=LOSS_TOLERANCE["remat"])


def test_jit_compile_trains_to_the_same_loss():
    plain = train_losses(make_tiny_lm())  # no dropout: XLA must match to round-off
    xla = train_losses(make_tiny_lm(), jit_compile=True)
    np.testing.assert_allclose(xla, plain, rtol=1e-5)


def test_mixed_precision_keeps_lora_weights_and_loss_in_float32():
    plain = train_losses(make_tiny_lm())
    try:
        set_precision_policy("bfloat16")
        lm = make_tiny_lm()
        wrappers = lk.apply_lora(lm, rank=2)
        assert wrappers[0].lora_kernel_a.dtype == "float32"
        assert wrappers[0].lora_kernel_b.dtype == "float32"
        assert wrappers[0].compute_dtype == "bfloat16"
        x, _ = next_token_dataset()
        assert lm.backbone(x).dtype == "bfloat16"  # the blocks compute in bfloat16
        assert lm(x).dtype == "float32"  # KerasHub projects onto the vocabulary in float32
        for variable in lm.trainable_variables:
            variable.trainable = True
        for variable in lm.weights:
            assert variable.dtype == "float32", variable.path
        mixed = train_losses(make_tiny_lm())
    finally:
        keras.config.set_dtype_policy("float32")
    np.testing.assert_allclose(mixed, plain, rtol=LOSS_TOLERANCE["mixed_precision"])


def test_an_option_keras_cannot_honour_is_refused():
    lm = make_tiny_lm()
    lm.backbone.transformer_layers[0].supports_jit = False
    with pytest.warns(UserWarning, match="doesn't support `jit_compile=True`"):
        lm.compile(optimizer="sgd", jit_compile=True)
    with pytest.raises(ValueError, match="jit_compile=True cannot be honoured") as error:
        refuse_unhonoured(lm, check_options(jit_compile=True))
    assert "transformer_layer_0" in str(error.value)
    refuse_unhonoured(lm, check_options())  # nothing asked, nothing refused


@pytest.mark.parametrize(
    "options, message",
    [
        ({"xla": True}, r"Unknown option\(s\) \['xla'\]"),
        ({"mixed_precision": "float64"}, "mixed_precision must be one of"),
        ({"remat": "yes"}, "remat must be True or False, got 'yes'"),
    ],
)
def test_bad_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        check_options(**options)


def test_bad_options_are_refused_before_any_run(tmp_path):
    with pytest.raises(ValueError, match="mixed_precision must be one of"):
        lk.compare(preset="gpt2_tiny", mixed_precision="half", out=str(tmp_path / "x"))
    assert not (tmp_path / "x").exists()


def test_options_label_names_what_differs():
    assert options_label(check_options()) == ""
    labelled = check_options(jit_compile=True, mixed_precision="bfloat16", chunked_loss=True)
    assert options_label(labelled) == "xla+bfloat16+chunked_loss"


def test_keras_lora_mode_trains_only_keras_lora_weights():
    lm = make_tiny_lm()
    MODES["keras_lora"](lm, {"rank": 4})
    names = sorted({variable.path.split("/")[-1] for variable in lm.trainable_variables})
    # Keras's enable_lora leaves the layer's bias trainable beside A and B.
    assert names == ["bias", "lora_kernel_a", "lora_kernel_b"]
    # It factorizes the last kernel axis only: A (64, 4, 4) and B (4, 16), bias (4, 16), for
    # each of query and value, in 2 blocks.
    assert lk.trainable_summary(lm)["trainable"] == 2 * 2 * (64 * 4 * 4 + 4 * 16 + 4 * 16)


def test_cli_parses_the_levers():
    args = cli.build_parser().parse_args(
        ["compare", "--jit-compile", "--mixed-precision", "bfloat16", "--remat", "--chunked-loss"]
    )
    levers = {name: value for name, value in cli._run_arguments(args).items() if name in OPTIONS}
    assert levers == dict(
        jit_compile=True,
        mixed_precision="bfloat16",
        frozen_dtype=None,
        remat=True,
        chunked_loss=True,
    )
    assert not cli.build_parser().parse_args(["sweep"]).remat


def test_the_levers_are_recorded_and_reported(tmp_path, monkeypatch):
    out = tmp_path / "report"
    tiny_compare(tmp_path, monkeypatch, mixed_precision="bfloat16", remat=True, chunked_loss=True)
    saved = json.loads((out / "results.json").read_text())
    assert saved["config"]["remat"] is True and saved["config"]["mixed_precision"] == "bfloat16"
    (run,) = saved["runs"]
    assert run["status"] == "ok", run.get("error")
    assert run["options"] == check_options(
        mixed_precision="bfloat16", remat=True, chunked_loss=True
    )
    points = run["memory_checkpoints"]
    assert list(points) == [
        "after_imports",
        "model_built",
        "optimizer_built",
        "after_first_step",
        "peak",
    ]
    assert points["peak"] >= max(points.values()) > 0
    report = (out / "report.md").read_text()
    assert "lora r=2 bfloat16+remat+chunked_loss" in report and "## Levers" in report
    assert "of the peak" in report and (out / "memory_checkpoints.png").exists()


def synthetic_run(mode, step, first, peak, loss, **options):
    return {
        "mode": mode,
        "rank": None if mode == "full" else 4,
        "status": "ok",
        "options": check_options(**options),
        "step_time_s": step,
        "first_step_s": first,
        "peak_memory_bytes": peak,
        "loss": [5.0, loss],
    }


def test_compile_pay_off_and_loss_tolerance_are_worked_out_from_the_runs():
    plain = synthetic_run("lora", 2.0, 10.0, 100, 4.0)
    xla = synthetic_run("lora", 1.0, 30.0, 120, 4.002, jit_compile=True)
    slower = synthetic_run("lora", 3.0, 30.0, 80, 4.5, remat=True)
    # 20 s more first step, 1 s saved a step: level after 1 + 20 steps.
    assert paid_off_after(xla, plain) == 21
    assert paid_off_after(slower, plain) is None
    assert paid_off_after(plain, plain) == 1
    assert loss_check(xla, plain) == pytest.approx((0.0005, LOSS_TOLERANCE["jit_compile"]))
    assert loss_check(slower, plain) == pytest.approx((0.125, LOSS_TOLERANCE["remat"]))
    runs = [synthetic_run("full", 4.0, 12.0, 1000, 4.0), plain, xla, slower]
    runs.append(synthetic_run("keras_lora", 2.0, 11.0, 110, 4.0))
    table = levers_section(runs)
    assert "| lora r=4 xla | on | - | - | - | - | 29.0 s | 0.50x | 1.20x | 21 steps |" in table
    assert "(1e-05: OUT)" in table  # remat must not move the loss
    goals = goals_section(runs)
    # remat's lower peak does not count: its loss moved.
    assert "memory: lora r=4 peaks at 100 bytes, 0.100x full fine-tuning's 1000 bytes" in goals
    assert "0.500x Keras's built-in LoRA's 2.00 s (goal <= 0.70x: met)" in goals
    assert levers_section(runs[:2]) is None  # no lever, no section


def test_the_estimate_follows_remat_and_the_chunked_loss():
    sizes = dict(
        num_layers=12,
        hidden_dim=768,
        num_heads=12,
        intermediate_dim=3072,
        vocabulary_size=50257,
        trainable_params=147456,
        total_params=124587264,
        batch_size=4,
        sequence_length=128,
    )
    plain = lk.estimate_training_memory(**sizes)["activations"]
    chunked = lk.estimate_training_memory(**sizes, loss_chunk=32)["activations"]
    # Three quarters of the logits and of their float32 softmax gradient are never held.
    assert plain - chunked == 3 * 4 * 32 * 50257 * (4 + 4)
    remat = lk.estimate_training_memory(**sizes, remat=True)["activations"]
    assert remat < chunked < plain


def test_the_options_sweep_turns_on_one_lever_a_run():
    runs = options_sweep_runs("lora", 4)
    assert [name for name, *_ in runs] == [
        "lora",
        "lora+xla",
        "lora+bfloat16",
        "lora+frozen_bfloat16",
        "lora+remat",
        "lora+chunked_loss",
    ]
    assert all(mode == "lora" and rank == 4 for _, mode, rank, _ in runs)
    assert [sum(1 for value in options.values() if value) for *_, options in runs] == [
        0,
        1,
        1,
        1,
        1,
        1,
    ]


@pytest.mark.parametrize("remat_first", [True, False])
def test_remat_keeps_mixlora_padding_mask_and_counts_each_token_once(remat_first):
    if keras.backend.backend() != "tensorflow":
        pytest.skip("refused on JAX and torch: see test_remat_of_mixlora_is_refused_there")
    x, y = next_token_dataset(batch_size=2)
    x["padding_mask"][:, 8:] = 0  # 2 x 8 real tokens, 2 x 4 padding

    def counts(remat):
        lm = make_tiny_lm()
        if remat and remat_first:  # the order train_one once had: the wrapper must still see
            rematerialise_blocks(lm.backbone)  # the mixture's class and its counts
        lk.apply_mixlora(lm, num_experts=4, top_k=2, rank=4)
        if remat and not remat_first:
            rematerialise_blocks(lm.backbone)
        lm.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(True))
        lm.train_on_batch(x, y)
        mixtures = lk.mixlora_layers(lm).values()
        return [keras.ops.convert_to_numpy(mixture.expert_counts) for mixture in mixtures]

    plain, remat = counts(False), counts(True)
    assert [c.sum() for c in remat] == [2 * 8 * 2] * TINY_GPT2["num_layers"]  # tokens x top_k
    for a, b in zip(plain, remat, strict=True):
        np.testing.assert_array_equal(b, a)


@pytest.mark.backends
def test_remat_of_mixlora_is_refused_there():
    backend = keras.backend.backend()
    if backend == "tensorflow":
        pytest.skip("TensorFlow recomputes MixLoRA: see the test above")
    lm = make_tiny_lm()
    lk.apply_mixlora(lm, num_experts=4, rank=4)
    why = {"jax": "jax.checkpoint would drop", "torch": "torch's checkpoint refuses"}[backend]
    with pytest.raises(ValueError, match=f"remat cannot be honoured on {backend} .* {why}"):
        rematerialise_blocks(lm.backbone)
    assert all("call" not in vars(block) for block in lm.backbone.transformer_layers)


def test_remat_on_jax_is_accepted():
    spec = lk.RunSpec(preset="gpt2_tiny", backend="jax", options=lk.Options(remat=True))
    assert spec.options.remat and spec.backend == "jax"
    assert lk.RunSpec(preset="gpt2_tiny", backend="jax", options_sweep=True).options_sweep


@pytest.mark.parametrize("kwargs", [{"remat": True}, {"options_sweep": True}])
def test_remat_of_mixlora_is_refused_before_any_run(tmp_path, kwargs):
    with pytest.raises(
        ValueError, match=r"Mode mixlora \(--modes\) cannot run with remat .* to the router"
    ):
        lk.compare(preset="gpt2_tiny", modes=("lora", "mixlora"), out=str(tmp_path / "x"), **kwargs)
    assert not (tmp_path / "x").exists()


def test_keras_lora_is_refused_with_targets_it_ignores(tmp_path):
    with pytest.raises(
        ValueError,
        match=r"Mode keras_lora \(--modes\) is Keras's built-in LoRA, which wraps query and "
        r"value only; targets \(--targets\) asks for query, value, ffn_in",
    ):
        lk.compare(
            preset="gpt2_tiny",
            modes=("lora", "keras_lora"),
            targets=("query", "value", "ffn_in"),
            out=str(tmp_path / "x"),
        )
    assert not (tmp_path / "x").exists()


def test_a_run_records_the_alpha_it_trains_with():
    spec = RunSpec(preset="gpt2_tiny", rank=4, alpha=32.0)

    def alpha(mode):
        return _alpha(spec, PlannedRun(mode, mode, None if mode == "full" else spec.rank))

    assert alpha("keras_lora") == 4  # Keras's enable_lora: alpha = rank
    assert alpha("lora") == alpha("qlora") == 32.0
    assert alpha("full") is None


def test_goals_also_name_the_best_in_float32_when_a_precision_option_wins():
    full = synthetic_run("full", 4.0, 12.0, 1000, 4.0)
    plain = synthetic_run("lora", 2.0, 10.0, 500, 4.0)
    remat = synthetic_run("lora", 2.5, 12.0, 450, 4.0, remat=True)
    half = synthetic_run("lora", 1.0, 11.0, 300, 4.01, frozen_dtype="bfloat16")
    peer = synthetic_run("keras_lora", 2.0, 11.0, 520, 4.0)
    goals = goals_section([full, plain, remat, half, peer])
    assert "- memory: lora r=4 frozen_bfloat16 peaks at 300 bytes, 0.300x" in goals
    assert "within its tolerance 5e-02" in goals
    assert "- memory, float32 throughout: lora r=4 remat peaks at 450 bytes, 0.450x" in goals
    assert "- speed, float32 throughout: lora r=4 steps in 2.00 s, 1.000x" in goals
    # With no precision option among the runs, one line each.
    assert "float32 throughout" not in goals_section([full, plain, remat, peer])
    # The float32 line only for the goal whose winner lowers precision: here memory, not speed.
    slow_half = synthetic_run("lora", 3.0, 11.0, 300, 4.01, frozen_dtype="bfloat16")
    goals = goals_section([full, plain, remat, slow_half, peer])
    assert "- memory, float32 throughout: lora r=4 remat" in goals
    assert "speed, float32 throughout" not in goals
    assert "- speed: lora r=4 steps in 2.00 s" in goals


def test_options_every_run_shares_are_the_experiments_own_not_a_lever():
    # `compare --jit-compile` under JAX: every run compiled; the goals still compare them.
    full = synthetic_run("full", 4.0, 30.0, 1000, 4.0, jit_compile=True)
    lora = synthetic_run("lora", 2.0, 25.0, 400, 4.0, jit_compile=True)
    peer = synthetic_run("keras_lora", 2.5, 26.0, 450, 4.0, jit_compile=True)
    half = synthetic_run("lora", 1.0, 24.0, 300, 4.01, jit_compile=True, frozen_dtype="bfloat16")
    runs = [full, lora, peer, half]
    assert plain_run(runs, lora) is lora and plain_run(runs, half) is lora
    goals = goals_section(runs)
    assert "- memory: lora r=4 xla+frozen_bfloat16 peaks at 300 bytes, 0.300x" in goals
    assert "- memory, float32 throughout: lora r=4 xla peaks at 400 bytes, 0.400x" in goals
    assert "0.400x Keras's built-in LoRA's 2.50 s" in goals
    # Where one run lacks it, the option is a lever again: its baseline has every option off.
    assert plain_run([synthetic_run("lora", 2.0, 9.0, 400, 4.0), lora], lora) is not lora


def test_a_ratio_just_over_the_goal_does_not_read_as_the_goal():
    full = synthetic_run("full", 4.0, 12.0, 1000, 4.0)
    lora = synthetic_run("lora", 2.0, 10.0, 401, 4.0)
    goals = goals_section([full, lora])
    assert "0.401x full fine-tuning's 1000 bytes (goal <= 0.40x: not met)" in goals
