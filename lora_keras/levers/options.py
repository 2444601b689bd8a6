"""The levers of a training run: XLA, mixed precision, rematerialisation, a chunked loss.

Each is an option of `compare`, `sweep` and the child that trains (`train_one`), checked
here before any process starts, recorded in results.json and shown in the report.
`Options` holds a run's levers and checks them on construction; `OPTIONS` is the table of
their names, defaults and meanings drawn from it; `LOSS_TOLERANCE` says
how far the loss after N steps may move from the plain run's when an option is on (only
precision options change the arithmetic; the others compute the same sums).
"""

import argparse
import dataclasses

# Keras is imported inside the functions that run a model: the parent process of a
# comparison, and `lora-keras --help`, check and label options without starting TensorFlow.

MIXED_PRECISION = (None, "float16", "bfloat16")
FROZEN_DTYPES = (None, "float16", "bfloat16")
# The options that compute in fewer bits than float32 (the others compute the same sums).
PRECISION_OPTIONS = ("mixed_precision", "frozen_dtype")
# The modes whose trained weights stay float32 beside a half-precision frozen model: our LoRA
# wrappers store their adapters in float32 (`lora_keras.layers.base_lora_layer.adapter_policy`).
FROZEN_DTYPE_MODES = ("lora", "dora")
# Positions per chunk of `chunked_loss`: 4 chunks of a 128-token sequence.
CHUNK_SIZE = 32


def _lever(default, meaning, help, **cli):
    """A lever: its default, what it means (the report's words), its flag's help and kind."""
    return dataclasses.field(default=default, metadata={"meaning": meaning, "help": help, **cli})


@dataclasses.dataclass(frozen=True)
class Options:
    """The levers of a training run, checked on construction (Keras-free).

    Args:
        jit_compile, mixed_precision, frozen_dtype, remat, chunked_loss: see `OPTIONS`.

    Example:
    ```python
    Options(remat=True, chunked_loss=True).to_json()["remat"]  # True
    Options(mixed_precision="fp8")  # ValueError: mixed_precision must be one of ...
    ```
    """

    jit_compile: bool = _lever(
        False,
        "XLA: compile the training step (compile time is in the first step)",
        "compile the training step with XLA (default: off, see README)",
        action=argparse.BooleanOptionalAction,
    )
    mixed_precision: str | None = _lever(
        None,
        "Keras dtype policy mixed_<dtype>: compute in float16/bfloat16, weights (LoRA's "
        "included) and the loss in float32",
        "Keras mixed_<dtype> policy: weights and loss stay float32",
        choices=MIXED_PRECISION[1:],
    )
    frozen_dtype: str | None = _lever(
        None,
        "store and compute the frozen weights in float16/bfloat16; the weights that train "
        "(LoRA's A and B) and the loss stay float32",
        "store and compute the frozen weights in this dtype; LoRA's weights and the loss "
        "stay float32 (modes lora, dora)",
        choices=FROZEN_DTYPES[1:],
    )
    remat: bool = _lever(
        False,
        "recompute each transformer block's activations in the backward pass (keras.remat)",
        "recompute transformer blocks in the backward pass",
        action="store_true",
    )
    chunked_loss: bool = _lever(
        False,
        f"cross-entropy over chunks of {CHUNK_SIZE} positions, never the whole logits tensor",
        "cross-entropy over sequence chunks",
        action="store_true",
    )

    def __post_init__(self):
        check_options(**self.to_json())

    def to_json(self):
        """`{lever: value}`, every lever: what results.json records as a run's options."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data):
        """The options of `{lever: value}`; missing levers are off, unknown ones refused."""
        return cls(**check_options(**data))


# The one table of the levers: name -> (default, meaning), in the order reports show them.
OPTIONS = {
    lever.name: (lever.default, lever.metadata["meaning"]) for lever in dataclasses.fields(Options)
}

# Relative difference allowed between the final loss with an option and without it.
LOSS_TOLERANCE = {
    # Without dropout XLA matches to round-off (tests/test_levers.py); with dropout it draws
    # other masks (TensorFlow lets XLA pick its own random-number algorithm), so the loss
    # agrees in distribution, not bit for bit.
    "jit_compile": 1e-2,
    "mixed_precision": 5e-2,  # 8 (bfloat16) or 11 (float16) mantissa bits in the matmuls
    "frozen_dtype": 5e-2,  # the same matmuls, and frozen weights rounded once to those bits
    "remat": 1e-5,
    "chunked_loss": 1e-5,
}


def default_options():
    """Every option at its default: the plain run."""
    return {name: default for name, (default, _) in OPTIONS.items()}


def check_options(**options):
    """Returns every option, defaults filled in, after checking names and values.

    Raises:
        ValueError: an unknown option or a value it does not take.
    """
    unknown = [name for name in options if name not in OPTIONS]
    if unknown:
        raise ValueError(f"Unknown option(s) {unknown}. Known options: {', '.join(OPTIONS)}.")
    checked = dict(default_options(), **options)
    for name in ("jit_compile", "remat", "chunked_loss"):
        if not isinstance(checked[name], bool):
            raise ValueError(f"{name} must be True or False, got {checked[name]!r}.")
    if checked["mixed_precision"] not in MIXED_PRECISION:
        raise ValueError(
            f"mixed_precision must be one of {MIXED_PRECISION}, got {checked['mixed_precision']!r}."
        )
    if checked["frozen_dtype"] not in FROZEN_DTYPES:
        raise ValueError(
            f"frozen_dtype must be one of {FROZEN_DTYPES}, got {checked['frozen_dtype']!r}."
        )
    if checked["frozen_dtype"] and checked["mixed_precision"]:
        raise ValueError(
            "frozen_dtype (--frozen-dtype) and mixed_precision (--mixed-precision) cannot both "
            "be on: frozen_dtype already computes in its dtype and keeps the trained weights "
            "float32. Choose one."
        )
    return checked


def check_mode_options(mode, options):
    """Returns `options` when training `mode` can honour them, else raises ValueError."""
    if options.get("frozen_dtype") and mode not in FROZEN_DTYPE_MODES:
        why = {
            "full": "every weight trains, and AdamW's small updates round away in 8 or 11 "
            "mantissa bits: use mixed_precision (--mixed-precision), which keeps them float32, "
            "or leave full out (--modes; sweep's --with-full)",
            "keras_lora": "Keras's enable_lora leaves each wrapped layer's bias trainable, and "
            "that bias would train in half precision",
            "qlora": "QLoRA's block kernels are already 4-bit, and its NF4 layers were not "
            "measured beside a half-precision model",
        }.get(mode, "it was not measured beside a half-precision model")
        raise ValueError(
            f"frozen_dtype={options['frozen_dtype']!r} (--frozen-dtype) cannot be honoured for "
            f"mode {mode!r}: {why}. It works with modes {', '.join(FROZEN_DTYPE_MODES)}."
        )
    return options


def options_label(options):
    """Names the options that differ from the defaults, e.g. `"xla+bfloat16"`; "" for none."""
    parts = []
    for name, (default, _) in OPTIONS.items():
        value = options.get(name, default)
        if value != default:
            parts.append(_LABELS[name](value))
    return "+".join(parts)


_LABELS = {
    "jit_compile": lambda on: "xla",
    "mixed_precision": lambda dtype: dtype,
    "frozen_dtype": lambda dtype: f"frozen_{dtype}",
    "remat": lambda on: "remat",
    "chunked_loss": lambda on: "chunked_loss",
}


def set_precision_policy(mixed_precision):
    """Sets Keras's global dtype policy before a model is built (`None`: leave float32).

    Under `mixed_<dtype>` every variable, the LoRA wrappers' A and B included (they take
    their wrapped layer's policy), is stored in float32 and cast for the computation;
    Keras's losses compute in float32; with float16, `compile` adds loss scaling.
    """
    import keras

    if mixed_precision is not None:
        keras.config.set_dtype_policy(f"mixed_{mixed_precision}")


def loss_scaled(optimizer, options):
    """`optimizer`, in Keras's `LossScaleOptimizer` where the backward pass runs in float16.

    Keras wraps it itself under the `mixed_float16` policy; a float16 frozen model's gradients
    also flow back through float16 activations, where small ones would flush to zero unscaled.
    """
    import keras

    if options["frozen_dtype"] == "float16":
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def rematerialise_blocks(backbone):
    """Makes each transformer block of `backbone` recompute its activations in the backward pass.

    `keras.RematScope` would do it for layers built inside it, but TensorFlow's
    `tf.recompute_grad` refuses keyword arguments in a graph, and GPT-2's blocks take the
    padding mask as one. So each block's `call` is wrapped here: the mask is bound in a
    closure and only the hidden states go through `keras.remat`. Only the block inputs are
    kept for the backward pass, one (batch, seq, hidden) tensor a block.

    Dropout must draw the same masks when the block is recomputed, or the gradient would
    be that of other masks. On TensorFlow and torch the recomputation runs the block's
    Python again, after its dropout seeds have advanced: the seeds are reset, inside the
    recomputed function, to their values before the forward pass. (It runs outside the
    block's Keras call, so layers not handed `training`, such as MixLoRA's, see `None`
    there: MixLoRA's expert counts grow in the forward pass only.) JAX refuses a state
    write from inside `jax.checkpoint` (a leaked tracer), so there the block's state goes
    through the checkpoint as values: see `_jax_rematerialised`. MixLoRA's blocks are
    refused on JAX and torch, before anything changes (so call this after
    `apply_mixlora`): their load-balance loss is added inside the block, where JAX's
    checkpoint would lose it, and torch's refuses a recomputation that skips it. Each
    block's class's own `call` runs, so a block that `apply_mixlora` turns into a
    `MixtureTransformerDecoder` lends its padding mask.

    Raises:
        ValueError: on JAX and torch, for a backbone with MixLoRA blocks.
    """
    import keras
    from keras import ops

    from lora_keras.gpt2_surgery import get_mixture

    blocks = backbone.transformer_layers
    backend = keras.backend.backend()
    if backend in ("jax", "torch") and any(get_mixture(block) is not None for block in blocks):
        raise ValueError(
            f"remat cannot be honoured on {backend} for a backbone with MixLoRA blocks: their "
            "load-balance loss and expert counts are computed in the forward pass only, and "
            + (
                "jax.checkpoint would drop the loss."
                if backend == "jax"
                else "torch's checkpoint refuses a recomputation that saves fewer tensors."
            )
            + " Run MixLoRA without remat, or use TensorFlow."
        )
    if backend == "jax":
        for block in blocks:
            block.call = _jax_rematerialised(block)
        return
    for block in blocks:

        def rematerialised(decoder_sequence, block=block, **kwargs):
            seeds = _seeds(block)  # found at each trace: adapters added since count
            before = [ops.copy(seed.value) for seed in seeds]

            def block_call(hidden):
                for seed, value in zip(seeds, before, strict=True):
                    seed.assign(value)
                return type(block).call(block, hidden, **kwargs)

            return keras.remat(block_call)(decoder_sequence)

        block.call = rematerialised


def _jax_rematerialised(block):
    """`block`'s call under `jax.checkpoint`, its variables passed in and its state passed out.

    Inside the checkpoint the block runs in a `StatelessScope` of its own, fed the values
    its variables have outside: a dropout layer's seed advance is recorded there, not
    written to the variable, and comes out of the checkpoint as an output, assigned
    outside. The recomputation in the backward pass starts from the same input seeds, so it
    draws the same masks, and the gradient reaches the variables through their values.
    """
    import keras

    def rematerialised(decoder_sequence, **kwargs):
        variables = block.variables  # found at each trace: adapters added since count
        state = [variable for variable in variables if not variable.trainable]

        def block_call(hidden, values):
            with keras.StatelessScope(list(zip(variables, values, strict=True))) as scope:
                outputs = type(block).call(block, hidden, **kwargs)
                return outputs, [scope.get_current_value(variable) for variable in state]

        values = [variable.value for variable in variables]
        outputs, updated = keras.remat(block_call)(decoder_sequence, values)
        for variable, value in zip(state, updated, strict=True):
            variable.assign(value)
        return outputs

    return rematerialised


def _seeds(block):
    """The seed states of the dropout layers in `block`, its adapters' included."""
    return [
        layer.seed_generator.state
        for layer in block._flatten_layers()
        if getattr(layer, "seed_generator", None) is not None
    ]


def refuse_unhonoured(model, options):
    """Fails when the model, once compiled, does not do what the options asked.

    Keras turns XLA off with only a warning where a layer does not support it (or
    TensorFlow's op determinism is on, or on a Mac GPU); a measured run must say so.
    """
    import keras

    if options["jit_compile"] and not model.jit_compile:
        unsupported = [layer.name for layer in model._flatten_layers() if not layer.supports_jit]
        raise ValueError(
            f"jit_compile=True cannot be honoured on the {keras.backend.backend()} backend for "
            "this model: Keras turned XLA compilation off"
            + (f" (layers without XLA support: {', '.join(unsupported)})" if unsupported else "")
            + ". Run without --jit-compile."
        )


def options_sweep_runs(mode, rank, backend=None):
    """`(name, mode, rank, options)`: `mode` plain, then once per lever, that lever alone.

    Under torch there is no `jit_compile` run: `RunSpec` refuses it there (Keras's torch.compile
    of the step stays eager; see `RunSpec._check_torch_compile`).
    """
    runs = [(mode, mode, rank, {})]
    for name in OPTIONS:
        if name == "frozen_dtype" and mode not in FROZEN_DTYPE_MODES:
            continue  # a mode that cannot honour it is shown without it
        if name == "jit_compile" and backend == "torch":
            continue
        options = {name: True}
        if name in PRECISION_OPTIONS:
            # bfloat16 alone: the experiment's own precision option would clash with it.
            options = {other: None for other in PRECISION_OPTIONS} | {name: "bfloat16"}
        runs.append((f"{mode}+{options_label(options)}", mode, rank, options))
    return runs
