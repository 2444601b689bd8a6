"""`lk.sweep`: LoRA at several ranks, each in its own process, into one report."""

from lora_keras.experiments.compare import keras_off_tensorflow, run_experiment, signature
from lora_keras.experiments.keywords import spec_with
from lora_keras.experiments.run_spec import SWEEP_RANKS


def sweep(spec=None, /, *, with_full=None, out=None, verbose=True, **settings):
    """Trains LoRA once per rank: trainable weights, peak memory, step time, final loss.

    Arguments are those of `lk.compare` (`text_field` and the levers included), with `ranks`
    (each once, default 1, 2, 4, 8, 16, 64) in place of `modes` and `rank`;
    `with_full=True` also trains full fine-tuning once, drawn as a baseline in the plots.
    `together=True` also trains every rank in one more process, as the adapters of one frozen
    model (`lk.apply_multi_lora`), each on the batches its own run sees, and the report
    compares that run with the runs one after another ("Trained together"): time, tokens per
    second, peak memory, and each adapter's loss against its own run's. For those losses to be
    equal within round-off, every run of such a sweep trains without dropout and without
    gradient clipping, each A drawn per (seed, rank, layer) (results.json: each run's
    `matched`).
    A `RunSpec` of kind "sweep" may be given instead, or with keywords that replace its own.

    Returns:
        The results dict also written to `out/results.json` (`config["kind"] == "sweep"`).
    """
    keras_off_tensorflow()
    if spec is None:
        base = {"kind": "sweep", "ranks": SWEEP_RANKS, "rank": None, "modes": ["lora"]}
    elif spec.kind == "sweep":
        base = spec.to_json()
    else:
        raise ValueError(
            f"sweep() takes a RunSpec of kind 'sweep', got kind={spec.kind!r}: run it with "
            "compare(spec), or make one with RunSpec(kind='sweep', ranks=..., rank=None)."
        )
    if with_full is not None:  # said by the modes
        base["modes"] = ["full", "lora"] if with_full else ["lora"]
    return run_experiment(spec_with("sweep", base, settings), out=out, verbose=verbose)


sweep.__signature__ = signature("sweep", with_full=False)
