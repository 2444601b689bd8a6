"""`RunSpec`: a comparison or a sweep, described once and checked on construction, without Keras.

One description for every reader and writer: the command line declares its flags from these
fields, `compare` and `sweep` build a spec from their keywords, results.json records it as its
`config` (`RunSpec.config()`), and each child process reads it back from its `runs/NAME.spec.json`
(`job_json`, `read_job`) with the `PlannedRun` it trains.

Example:
```python
spec = RunSpec(preset="gpt2_tiny", modes=("full", "lora"), steps=3)
[run.name for run in spec.runs()]  # ["full", "lora"]
RunSpec.from_json(spec.to_json()) == spec  # True
RunSpec(steps=1)  # ValueError: steps (--steps) must be at least 2 (the first is timed ...)
```
"""

import dataclasses
from collections.abc import Mapping

from lora_keras.backends import BACKENDS, check_backend
from lora_keras.experiments import checks
from lora_keras.experiments.checks import check_integer, check_positive, flag
from lora_keras.experiments.planned_run import PlannedRun
from lora_keras.experiments.train_one import MODES
from lora_keras.levers.options import OPTIONS, Options, options_sweep_runs
from lora_keras.mixlora.settings import MIXLORA_DEFAULTS
from lora_keras.models.architectures import KNOWN_PRESETS
from lora_keras.quality.heldout_data import NO_KEEP
from lora_keras.targets import TARGETS, check_targets

BOTH = ("compare", "sweep")
# Modes that do not train at `rank`: full fine-tuning has none, MixLoRA its own.
UNRANKED_MODES = ("full", "mixlora")
# `keras.utils.set_random_seed` seeds NumPy, which takes seeds below 2**32.
MAX_SEED = 2**32 - 1
# The ranks `sweep` trains when none are given.
SWEEP_RANKS = (1, 2, 4, 8, 16, 64)


def _setting(default, help=None, *, commands=BOTH, recorded=BOTH, **cli):
    """A field of `RunSpec`, with what its readers need to know of it.

    Args:
        default: its value unless given.
        help: its command-line flag's help; `None` for a setting of Python only.
        commands: the functions (and commands) that take it as a keyword argument (flag).
        recorded: the kinds of experiment whose results.json `config` records it; the others
            are said elsewhere in results.json (a run's samples and options) or only steer.
        **cli: how the flag is read: argparse's `type`, `choices` or `action`, or `csv` (the
            type of each comma-separated item), and `argument_default` where the function's
            default differs from the field's.
    """
    metadata = {"help": help, "commands": commands, "recorded": recorded, **cli}
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """A comparison (`kind="compare"`) or a rank sweep (`kind="sweep"`), checked on construction.

    Args:
        Every keyword of `lk.compare` and `lk.sweep` but `out` and `verbose` (which say where
        the results go and how much to show), the levers as `options` (an `Options`, or
        flat through `from_json`), and:
        kind: "compare" or "sweep": which runs `runs()` plans (see `runs`).
        ranks: a sweep's LoRA ranks (each once); `rank` is then `None`.

    Raises:
        ValueError: a bad setting, naming the argument and its flag (fastest checks first).
            What needs the disk or the network (the data, pretrained weights) is checked by
            `check_available`, so that a spec read back elsewhere still reads.
    """

    preset: str = _setting(
        "gpt2_base_en",
        f"a GPT-2 preset ({', '.join(KNOWN_PRESETS)}) or a folder written by save_to_preset",
    )
    weights: str | None = _setting(
        None,
        "pretrained downloads the KerasHub preset; random builds the same architecture "
        "offline. Default: pretrained when the KerasHub download host answers, else random",
        choices=("pretrained", "random"),
    )
    data: str = _setting(
        "embedded",
        "embedded (shipped, offline; embedded:FAMILY for one of its six families, e.g. "
        "embedded:recipe), reddit_tifu (TFDS download) or a path to a .txt file, a .jsonl "
        "file or a folder of them",
    )
    modes: tuple = _setting(
        ("full", "lora"),
        f"comma-separated training modes, each once, among: {', '.join(MODES)}",
        commands=("compare",),
        csv=str,
    )
    steps: int = _setting(
        10, "training steps a run, at least 2 (the first is timed apart)", type=int
    )
    batch_size: int = _setting(4, "sequences a training step", type=int)
    sequence_length: int = _setting(
        128,
        "tokens a sequence, at most the preset's positions (1024 for GPT-2, 512 gpt2_tiny, "
        "256 gpt2_mini)",
        type=int,
    )
    rank: int | None = _setting(
        4, "the rank of the LoRA-family modes", commands=("compare",), type=int
    )
    alpha: float = _setting(32.0, "LoRA scaling: the update is scaled by alpha/rank", type=float)
    targets: tuple = _setting(
        ("query", "value"),
        f"comma-separated projections LoRA wraps, among: {', '.join(TARGETS)}",
        csv=str,
    )
    learning_rate: float = _setting(5e-5, "AdamW learning rate, above 0", type=float)
    seed: int = _setting(0, "seeds the weights and data order", type=int)
    # `apply_mixlora` settings for mode "mixlora", MIXLORA_DEFAULTS filled in (Python only).
    mixlora: dict | None = _setting(None, commands=("compare",), recorded=("compare",))
    sample_length: int = _setting(
        64,
        "the most tokens a sample has, at least 1",
        commands=("compare",),
        recorded=("compare",),
        type=int,
    )
    text_field: str = _setting("text", "the field of a .jsonl record that holds its text")
    keep_data: str | None = _setting(
        None,
        "what the runs should not forget, evaluated before and after training: a source as "
        "--data takes it, or none. Default: for gpt2_mini the held-out documents of the "
        "families it was pretrained on, else none",
    )
    eval_documents: int = _setting(
        32,
        "held-out documents evaluated before and after training, never trained on: the first "
        "of --data (as many as the steps leave) and of --keep-data",
        type=int,
    )
    options: Options = dataclasses.field(
        default_factory=Options, metadata={"commands": BOTH, "recorded": BOTH}
    )
    backend: str = _setting(
        "tensorflow",
        "the Keras backend the runs train and measure under",
        choices=tuple(BACKENDS),
    )
    data_parallel: bool = _setting(
        False,
        "train on every visible device (jax or tensorflow); --batch-size is the global batch",
        action="store_true",
    )
    kind: str = _setting("compare", commands=())
    ranks: tuple | None = _setting(
        None,
        "comma-separated LoRA ranks, each once",
        commands=("sweep",),
        csv=int,
        argument_default=SWEEP_RANKS,
    )
    together: bool = _setting(
        False,
        "also train every rank as one adapter of a single frozen model, in one process, on "
        "the batches its own run sees (all runs then without dropout or gradient clipping, "
        "each A seeded by rank), and compare it with the runs one after another",
        commands=("sweep",),
        recorded=("sweep",),
        action="store_true",
    )
    # Recorded elsewhere: the prompts in each run's samples, the sweep in each run's options.
    sample_prompts: tuple = _setting(
        (),
        "comma-separated prompts to generate from after training (timed)",
        commands=("compare",),
        recorded=(),
        csv=str,
    )
    try_anyway: bool = _setting(
        False,
        "run even where the memory planner predicts a run will not fit this machine",
        recorded=(),
        action="store_true",
    )
    options_sweep: bool = _setting(
        False,
        "train each mode again once per lever, that lever alone, to see its effect",
        commands=("compare",),
        recorded=(),
        action="store_true",
    )
    timeout_s: float | None = _setting(
        None,
        "seconds allowed a run before it is stopped (default: no limit)",
        recorded=(),
        type=float,
    )

    def __post_init__(self):
        def normalise(name, value):
            object.__setattr__(self, name, value)

        if isinstance(self.options, Mapping):
            normalise("options", Options.from_json(self.options))
        normalise("modes", tuple(self.modes))
        normalise("sample_prompts", tuple(self.sample_prompts))
        if "mixlora" in self.modes:  # results.json records the settings used, defaults included
            normalise("mixlora", {**MIXLORA_DEFAULTS, **(self.mixlora or {})})
        if self.kind == "sweep" or self.ranks is not None:
            checks.check_ranks(self.ranks)
            normalise("ranks", tuple(int(rank) for rank in self.ranks))
        self._check()
        normalise("targets", check_targets(self.targets))
        self.runs()  # each run can honour its options

    def _check(self):
        """Every setting, fastest checks first; the messages name the argument and its flag."""
        checks.check_preset_and_weights(self.preset, self.weights)
        check_backend(self.backend)
        if self.data_parallel and self.backend == "torch":
            raise ValueError(
                f"{flag('data_parallel')} needs the jax or tensorflow backend: Keras's "
                "distribution API has no torch data parallel. Use backend='jax' (--backend jax)."
            )
        self._check_torch_compile()
        checks.check_together(self)
        self._check_options_sweep()
        if "mixlora" in self.modes and (self.options.remat or self.options_sweep):
            # Recomputing a MixLoRA block drops its load-balance loss from the router's gradient.
            raise ValueError(
                "Mode mixlora (--modes) cannot run with remat (--remat, or the remat run of "
                "--options-sweep): recomputing a block in the backward pass leaves MixLoRA's "
                "load-balance loss without a gradient to the router. Measure mixlora without "
                "remat."
            )
        try:
            targets = check_targets(self.targets)
        except ValueError as error:
            raise ValueError(f"{flag('targets')}: {error}") from None
        checks.check_keras_lora_targets(self.modes, targets)
        check_integer("steps", self.steps, 2, why=" (the first is timed apart)")
        check_integer("batch_size", self.batch_size, 1)
        check_integer(
            "seed", self.seed, 0, MAX_SEED, " (Keras seeds NumPy, whose seeds are 32-bit)"
        )
        if self.rank is not None:  # refused even where no mode uses it
            check_integer("rank", self.rank, 1)
        check_positive("alpha", self.alpha)
        check_positive("learning_rate", self.learning_rate)
        check_positive("timeout_s", self.timeout_s, optional=True)
        if self.sample_length is not None:
            check_integer("sample_length", self.sample_length, 1)
        check_integer("eval_documents", self.eval_documents, 1)
        shape = checks.architecture(self.preset)
        self._check_shape(shape, targets)
        checks.check_modes(self.modes)
        if "mixlora" in self.modes:
            checks.check_mixlora(self.mixlora, shape)

    def _check_torch_compile(self):
        """Dynamo cannot resume from graph breaks in Keras's layer calls (`keras.src.tree` under
        a name scope): it compiles `Layer.forward` per layer up to its recompile limit (8), then
        runs them eagerly. Plain Keras GPT-2 does the same: not ours to fix, so refused."""
        if self.backend == "torch" and self.options.jit_compile:
            raise ValueError(
                f"{flag('jit_compile')} cannot run on backend='torch' (--backend torch): Keras "
                "compiles the step with torch.compile, which breaks its graph inside Keras's "
                "own layer calls and recompiles each layer until dynamo's recompile limit, so "
                "the step stays eager after a first step of minutes, for GPT-2 with or without "
                "LoRA. Run torch without --jit-compile, or use --backend jax --jit-compile (XLA)."
            )

    def _check_options_sweep(self):
        """An options sweep turns each lever on alone, against runs with every lever off."""
        chosen = [
            name for name, value in self.options.to_json().items() if value != OPTIONS[name][0]
        ]
        if self.options_sweep and chosen:
            raise ValueError(
                f"options_sweep (--options-sweep) turns each lever on alone against the plain "
                f"run, so it takes no lever of its own; got "
                f"{', '.join(flag(name) for name in chosen)}. Drop those, or compare them "
                "without --options-sweep."
            )

    def _check_shape(self, shape, targets):
        """The sequence length and LoRA ranks the preset's shape allows (when it can be read)."""
        if shape is None:
            check_integer("sequence_length", self.sequence_length, 1)
            return
        maximum = shape["max_sequence_length"]
        why = f" ({self.preset} has position embeddings for {maximum} tokens)"
        check_integer("sequence_length", self.sequence_length, 1, maximum, why)
        smallest = checks.smallest_projection(shape, targets)
        why = f" (the smallest size of the {', '.join(targets)} projections of {self.preset})"
        if self.rank_used():
            name = "ranks" if self.ranks else "rank"
            for rank in self.ranks or [self.rank]:
                check_integer(name, rank, 1, smallest, why)

    def rank_used(self):
        """Whether a run trains at `rank` (or `ranks`): full fine-tuning has no rank and
        MixLoRA its own (`mixlora["rank"]`)."""
        return bool(set(self.modes) - set(UNRANKED_MODES))

    def notes(self):
        """What a comparison says before its runs about a setting none of them uses."""
        if self.kind == "sweep" or self.rank_used() or "mixlora" not in self.modes:
            return []
        return [
            f"note: {flag('rank')} {self.rank} is the rank of the LoRA-family modes; mixlora "
            f"trains experts of MixLoRA's own rank, {self.mixlora['rank']} (set by "
            "compare(mixlora={'rank': ...})), so results.json's config records rank null."
        ]

    def check_available(self):
        """Checks what needs the disk or the network: the data gives `steps` batches, and
        pretrained weights can be had (ConnectionError, FileNotFoundError, ValueError)."""
        checks.check_weights_reachable(self.preset, self.weights)
        checks.check_data(self.data, self.text_field, self.steps, self.batch_size)
        if self.keep_data not in (None, NO_KEEP):
            checks.check_data(self.keep_data, self.text_field, 0, 0, name="keep_data")

    def runs(self):
        """The `PlannedRun`s of this experiment, in order.

        A comparison trains each mode once (with `options_sweep`, once more per lever, that
        lever alone); a sweep trains full fine-tuning once if its modes have it, and each
        other mode once per rank. Only the LoRA family has a rank; MixLoRA has its experts'.
        """
        own_rank = {"full": None, "mixlora": (self.mixlora or {}).get("rank")}
        if self.kind == "sweep":
            runs = [
                (mode if mode == "full" else f"{mode}_rank_{rank}", mode, own_rank.get(mode, rank))
                for mode in self.modes
                for rank in ([None] if mode == "full" else self.ranks)
            ]
        else:
            runs = [(mode, mode, own_rank.get(mode, self.rank)) for mode in self.modes]
        runs = [(*run, {}) for run in runs]
        if self.options_sweep:
            runs = [
                swept
                for _, mode, rank, _ in runs
                for swept in options_sweep_runs(mode, rank, self.backend)
            ]
        shared = self.options.to_json()
        planned = [
            PlannedRun(name, mode, rank, Options.from_json({**shared, **own}))
            for name, mode, rank, own in runs
        ]
        if self.together:  # after the runs one after another, which it is compared with
            planned.append(PlannedRun("lora_together", "lora", None, self.options, self.ranks))
        return planned

    def to_json(self):
        """Every setting, JSON-ready, the levers flat (as results.json's `config` has them)."""
        data = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name == "options":
                data.update(value.to_json())
            elif isinstance(value, tuple):
                data[field.name] = list(value)
            else:
                data[field.name] = dict(value) if isinstance(value, dict) else value
        return data

    def config(self):
        """What results.json records as `config`: the settings its kind records (`_setting`)."""
        data = self.to_json()
        if not self.rank_used():
            data["rank"] = None  # no run trains at it (`notes` says so)
        kind = "sweep" if self.kind == "sweep" else "compare"  # a benchmark's, as a comparison
        for field in dataclasses.fields(self):
            if kind not in field.metadata["recorded"]:
                del data[field.name]
        if not self.together:
            data.pop("together", None)  # as before it existed: older readers read it unchanged
        return data

    @classmethod
    def from_json(cls, data):
        """The spec of `to_json()`, or of a results.json `config` (missing settings: defaults).

        Raises:
            ValueError: an unknown setting, or a bad one (as the constructor).
        """
        settings = dict(data)
        levers = {name: settings.pop(name) for name in OPTIONS if name in settings}
        known = [field.name for field in dataclasses.fields(cls) if field.name != "options"]
        unknown = sorted(set(settings) - set(known))
        if unknown:
            raise ValueError(
                f"Unknown setting(s) {unknown} in a run's description. Known: "
                f"{', '.join([*known, *OPTIONS])}."
            )
        return cls(**settings, options=Options.from_json(levers))
