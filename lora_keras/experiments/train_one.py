"""Trains one configuration and measures it: what the child process of a comparison runs.

Everything a report says about a run comes from here: the callbacks' step
times, memory and per-step loss, the trainable counts, the estimate. The parent
(`compare`) only orchestrates and runs no model.
"""

import functools
import math
import time


def _setup_full(lm, spec):
    """Full fine-tuning: every weight trains, as the model comes."""


def _setup_lora(lm, spec, variant="lora"):
    from lora_keras.lora import apply_lora

    apply_lora(
        lm,
        rank=spec["rank"],
        alpha=spec["alpha"],
        targets=tuple(spec["targets"]),
        variant=variant,
    )


def _setup_mixlora(lm, spec):
    from lora_keras.mixlora.apply import apply_mixlora
    from lora_keras.mixlora.settings import MIXLORA_DEFAULTS

    # compare's rank and alpha are LoRA's; MixLoRA's come from spec["mixlora"] or the defaults.
    apply_mixlora(lm, **{**MIXLORA_DEFAULTS, **(spec.get("mixlora") or {})})


def _setup_keras_lora(lm, spec):
    # Keras's built-in LoRA, the peer in the same run: it only takes a rank (alpha = rank)
    # and its layer names; query and value are its defaults, as ours.
    lm.backbone.enable_lora(spec["rank"])


def _setup_qlora(lm, spec):
    from lora_keras.qlora import quantize_nf4

    quantize_nf4(lm)  # QLoRA: NF4 block kernels (blocks of 64, double quantization)
    _setup_lora(lm, spec)


# A training mode is one more configuration of the same harness.
MODES = {
    "full": _setup_full,
    "lora": _setup_lora,
    "qlora": _setup_qlora,
    "dora": functools.partial(_setup_lora, variant="dora"),
    "mixlora": _setup_mixlora,
    "keras_lora": _setup_keras_lora,
}


def _mode_settings(spec, run):
    """What a mode's set-up in `MODES` reads: the run's rank, the spec's alpha, targets and
    MixLoRA settings."""
    return {"rank": run.rank, "alpha": spec.alpha, "targets": spec.targets, "mixlora": spec.mixlora}


def _alpha(spec, run):
    """The LoRA alpha a run trains with (MixLoRA's comes from `mixlora_record`)."""
    if run.mode == "full":
        return None
    # Keras's enable_lora takes no alpha: it scales by alpha = rank.
    return run.rank if run.mode == "keras_lora" else spec.alpha


def _describe_data(source, texts):
    if isinstance(texts, list):  # no TensorFlow here: read as strings, shuffled by NumPy
        documents, order = len(texts), "; no TensorFlow: NumPy's shuffle, not tf.data's"
    else:
        documents, order = int(texts.cardinality()), ""
    if source == "embedded":
        return f"embedded corpus ({documents:,} documents generated in-package, no download{order})"
    if source == "reddit_tifu":
        return f"TFDS reddit_tifu ({documents:,} documents)"
    return f"local text {source} ({documents:,} documents{order})"


def _samples(lm, prompts, max_length):
    samples = []
    for prompt in prompts:
        start = time.perf_counter()
        text = lm.generate(prompt, max_length=max_length)
        samples.append({"prompt": prompt, "text": text, "seconds": time.perf_counter() - start})
    return samples


def _mark_non_finite_loss(record, losses=None, whose="the training loss"):
    """A loss that became nan or inf makes the run's result worthless: say so in its status."""
    for step, loss in enumerate(record["loss"] if losses is None else losses, start=1):
        if not math.isfinite(loss):
            record["status"] = "non-finite loss"
            record["error"] = (
                f"{whose} became {loss} at step {step}: training diverged. Lower "
                "the learning rate (--learning-rate) or check the data."
            )
            return


def evaluate_sets(lm, eval_sets, batch_size, sequence_length, adapter=None):
    """`({name: evaluate_heldout(...)}, seconds)` of `lm` (its `adapter`) on each held-out set."""
    from lora_keras.quality import evaluate_heldout

    start = time.perf_counter()
    results = {
        name: evaluate_heldout(lm, documents, batch_size, sequence_length, adapter=adapter)
        for name, documents in eval_sets.items()
    }
    return results, time.perf_counter() - start


def _eval_record(before, after):
    """What a run records of each held-out set: its loss before and after, and its tokens."""
    return {
        name: {
            "before": before[name]["loss"],
            "after": after[name]["loss"],
            "tokens": losses["tokens"],
        }
        for name, losses in before.items()
    }


def _record_adapters(record, names, run, spec, history, eval_before, eval_after):
    """A together run's record: each adapter's losses, not the sum of them that Keras trained."""
    record["adapters"] = [
        {
            "name": name,
            "rank": rank,
            "alpha": spec.alpha,
            "loss": history.losses[name],
            "eval": _eval_record(eval_before[name], eval_after[name]),
        }
        for name, rank in zip(names, run.together, strict=True)
    ]
    record["sequences_per_adapter"] = spec.batch_size
    del record["loss"], record["eval"]  # each adapter's are above (Keras trained their sum)
    for adapter in record["adapters"]:
        _mark_non_finite_loss(record, adapter["loss"], f"adapter {adapter['name']}'s loss")


def train_one(spec, run, verbose=1):
    """Trains `run` of `spec` for `spec.steps` steps and measures it.

    Args:
        spec: the `RunSpec` of the experiment (a child reads it, and `run`, from its file with
            `lora_keras.experiments.job_file.read_job`).
        run: the `PlannedRun` to train: its mode, rank and options (the levers).
        verbose: Keras's `fit` verbosity.

    Returns:
        The run record of `results.json` (see `lora_keras.experiments.runner`).
    """
    import keras

    from lora_keras.data import load_texts, make_lm_datasets, preprocessor_detached
    from lora_keras.experiments import together
    from lora_keras.experiments.environment import describe_environment
    from lora_keras.experiments.optimizer import tutorial_optimizer
    from lora_keras.gpt2_surgery import turn_off_dropout
    from lora_keras.levers import options as levers
    from lora_keras.levers.chunked_loss import ChunkedLossCausalLM
    from lora_keras.measure.callbacks import LossHistory, MemoryCallback, StepTimeCallback
    from lora_keras.measure.estimate import estimate_for_model, stored_weight_bytes
    from lora_keras.measure.memory import memory_probe
    from lora_keras.mixlora.apply import mixlora_record
    from lora_keras.models import load_gpt2
    from lora_keras.multi_lora.seeded_a import SEEDED_A, seed_lora_a
    from lora_keras.quality.heldout_data import keep_documents, split_heldout
    from lora_keras.summary import trainable_summary

    options = run.options.to_json()
    # What the process holds before any model exists (on a CPU: Python, TensorFlow and
    # its thread pools): the floor under every measured peak, beside the estimate.
    probe = memory_probe()
    checkpoints = {"after_imports": probe.current_bytes()}
    memory = MemoryCallback()
    levers.set_precision_policy(options["mixed_precision"])
    keras.utils.set_random_seed(spec.seed)
    all_texts = load_texts(spec.data, text_field=spec.text_field)
    # Held out before anything trains, the same documents for every mode of the comparison.
    needed = spec.steps * spec.batch_size
    texts, target_heldout = split_heldout(all_texts, spec.eval_documents, needed)
    keep, keep_source = keep_documents(
        spec.preset, spec.keep_data, spec.eval_documents, spec.text_field
    )
    eval_sets = {"target": target_heldout, "keep": keep}
    eval_sets = {name: documents for name, documents in eval_sets.items() if documents}
    # Random weights come with a tokenizer trained on the corpus in use (cached on disk).
    # (all of them, as `compare` trained and cached it: a vocabulary, not the model's training)
    tokenizer_texts = all_texts if spec.data != "embedded" else None
    lm = load_gpt2(
        spec.preset,
        weights=spec.weights,
        sequence_length=spec.sequence_length,
        tokenizer_texts=tokenizer_texts,
        dtype=options["frozen_dtype"],  # the adapters that train stay float32
    )
    train_ds, _ = make_lm_datasets(
        texts, lm, batch_size=spec.batch_size, num_batches=spec.steps, seed=spec.seed
    )
    data_source = _describe_data(spec.data, texts)
    # A sweep trained together: every run alike, so that each adapter takes its own run's steps.
    matched = None
    if spec.together:
        matched = {"dropout": 0.0, "preset_dropout": turn_off_dropout(lm)}
    names = together.set_up_together(lm, spec, run) if run.together else None
    if names:
        train_ds = together.together_batches(train_ds, len(names))
    else:
        MODES[run.mode](lm, _mode_settings(spec, run))
    if matched and run.mode != "full":
        seed_lora_a(lm, spec.seed)
        matched["a_init"] = SEEDED_A
    if options["remat"]:  # after the mode's adapters: it wraps the blocks they make
        levers.rematerialise_blocks(lm.backbone)
    checkpoints["model_built"] = probe.current_bytes()
    # In batches of the training's size: evaluating holds less than a training step, so it
    # leaves the measured peak to training.
    evaluate = functools.partial(
        evaluate_sets, lm, eval_sets, spec.batch_size, spec.sequence_length
    )
    if names:
        eval_before, eval_time_s = together.evaluate_adapters(evaluate, names)
    else:
        eval_before, eval_time_s = evaluate()
    if options["chunked_loss"]:
        # It trains the same backbone, computing its own loss; `lm` keeps generating.
        model, loss = ChunkedLossCausalLM(lm.backbone, levers.CHUNK_SIZE), {}
    else:
        model, loss = lm, {"loss": keras.losses.SparseCategoricalCrossentropy(from_logits=True)}
    if names:  # each adapter's loss of each step; KerasHub's default accuracy kept beside them
        accuracy = keras.metrics.SparseCategoricalAccuracy()
        loss["weighted_metrics"] = [accuracy, *together.adapter_loss_metrics(names)]
    # One norm over several adapters' gradients would clip each otherwise than its own run.
    clipnorm = None if matched else 1.0
    model.compile(
        # The same for every mode; with a float16 frozen model, its loss scaled.
        optimizer=levers.loss_scaled(tutorial_optimizer(spec.learning_rate, clipnorm), options),
        jit_compile=options["jit_compile"],
        **loss,
    )
    levers.refuse_unhonoured(model, options)
    # Built here, AdamW's slots exist before the first step; built inside it, they make
    # Keras trace and compile that step twice (about twice the first-step time).
    model.optimizer.build(model.trainable_variables)
    checkpoints["optimizer_built"] = probe.current_bytes()
    sequences = spec.batch_size * len(names or [None])  # a step's, over every adapter
    timer = StepTimeCallback(tokens_per_step=sequences * spec.sequence_length)
    losses = LossHistory()
    callbacks = [memory, timer, losses]
    if names:
        callbacks.append(together.AdapterLossHistory(names))
    with preprocessor_detached(lm):
        model.fit(
            train_ds,
            epochs=1,
            shuffle=False,  # make_lm_datasets already shuffled, by the seed
            callbacks=callbacks,
            verbose=verbose,
        )
    if names:
        eval_after, seconds = together.evaluate_adapters(evaluate, names, before=False)
    else:
        eval_after, seconds = evaluate()
    eval_time_s += seconds
    counts = trainable_summary(lm)
    estimate = estimate_for_model(
        lm,
        sequences,
        spec.sequence_length,
        remat=options["remat"],
        loss_chunk=levers.CHUNK_SIZE if options["chunked_loss"] else None,
        jit_compile=options["jit_compile"],
    )
    checkpoints["after_first_step"] = memory.current_history[0]
    checkpoints["peak"] = memory.peak_bytes
    record = {
        "mode": run.mode,
        "rank": run.rank if run.mode != "full" else None,
        "alpha": _alpha(spec, run),
        "status": "ok",
        "error": None,
        "trainable_params": counts["trainable"],
        "total_params": counts["total"],
        "stored_weight_bytes": stored_weight_bytes(lm),  # NF4 kernels at their packed size
        **timer.summary(),
        "train_time_s": sum(timer.step_times),  # every step, the first included
        "peak_memory_bytes": memory.peak_bytes,
        "memory_source": memory.source,
        "memory_over_steps": memory.history,  # the peak so far, after each step
        "memory_in_use_over_steps": memory.current_history,
        "runtime_memory_bytes": checkpoints["after_imports"],
        "memory_checkpoints": checkpoints,  # memory in use at fixed points; the peak
        "options": options,
        "estimated_memory_bytes": estimate["total"],
        "estimate": estimate,
        "loss": losses.losses,
        "provenance": dict(lm.provenance),
        "data_source": data_source,
        "eval": None if names else _eval_record(eval_before, eval_after),
        "eval_time_s": eval_time_s,  # not in the step times
        "eval_sources": {
            "target": f"{len(target_heldout)} documents of the data, held out of training",
            **({"keep": keep_source} if "keep" in eval_sets else {}),
        },
        "environment": describe_environment(),
        **mixlora_record(lm),  # settings and expert loads of a MixLoRA run
    }
    if matched:
        record["matched"] = {**matched, "global_clipnorm": clipnorm}
    if names:
        _record_adapters(record, names, run, spec, callbacks[-1], eval_before, eval_after)
    else:
        _mark_non_finite_loss(record)
    if spec.sample_prompts:
        record["samples"] = _samples(lm, spec.sample_prompts, spec.sample_length)
    return record
