"""A run described once: `RunSpec` checks itself, round-trips through JSON, and is what the
command line, `compare`, `sweep`, the child and results.json read and write."""

import importlib
import inspect
import json
import pathlib
import subprocess
import sys

import pytest

import lora_keras as lk
from lora_keras import cli
from lora_keras.experiments.job_file import job_json, read_job
from lora_keras.experiments.keywords import arguments
from lora_keras.experiments.run_spec import SWEEP_RANKS, PlannedRun, RunSpec
from lora_keras.levers.options import OPTIONS, Options

pytestmark = pytest.mark.backends  # Keras-free: the same under every backend

DATA = pathlib.Path(__file__).parent / "data"

# Every keyword of lora_keras 0.1.0's `compare` and `sweep`, with its default.
COMPARE_0_1_0 = dict(
    preset="gpt2_base_en",
    weights=None,
    data="embedded",
    modes=("full", "lora"),
    steps=10,
    batch_size=4,
    sequence_length=128,
    rank=4,
    alpha=32.0,
    targets=("query", "value"),
    learning_rate=5e-5,
    seed=0,
    out=None,
    mixlora=None,
    sample_prompts=(),
    sample_length=64,
    timeout_s=None,
    verbose=True,
    text_field="text",
    jit_compile=False,
    mixed_precision=None,
    frozen_dtype=None,
    remat=False,
    chunked_loss=False,
    options_sweep=False,
    backend="tensorflow",
    data_parallel=False,
)
SWEEP_ONLY = dict(ranks=(1, 2, 4, 8, 16, 64), with_full=False)
COMPARE_ONLY = ("modes", "rank", "mixlora", "sample_prompts", "sample_length", "options_sweep")
SWEEP_0_1_0 = {
    **{k: v for k, v in COMPARE_0_1_0.items() if k not in COMPARE_ONLY},
    **SWEEP_ONLY,
}
# The keys of a sweep's results.json config written by lora_keras 0.1.0.
SWEEP_CONFIG_0_1_0 = {
    *("ranks", "preset", "weights", "data", "steps", "batch_size", "sequence_length", "alpha"),
    *("targets", "learning_rate", "seed", "text_field", *OPTIONS, "backend", "data_parallel"),
    *("modes", "kind", "rank"),
}


def _flags(help_text):
    """The flags a --help lists, in order."""
    return [line.split()[0] for line in help_text.splitlines() if line.startswith("  -")]


@pytest.mark.parametrize("command", ["compare", "sweep"])
def test_help_keeps_every_flag_of_0_1_0_in_order(command, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")  # the width the saved help was written at
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    today = _flags(capsys.readouterr().out)
    saved = _flags((DATA / "help_0_1_0" / f"{command}.txt").read_text())
    # Since 0.1.0 only the held-out evaluation's flags and the planner's override were added.
    added = ("--keep-data", "--eval-documents", "--try-anyway", "--together")  # issues 18-20
    assert [flag for flag in today if flag not in added] == saved


@pytest.mark.parametrize("runner, keywords", [(lk.compare, COMPARE_0_1_0), (lk.sweep, SWEEP_0_1_0)])
def test_every_keyword_of_0_1_0_keeps_its_default(runner, keywords):
    parameters = inspect.signature(runner).parameters
    since = {"keep_data", "eval_documents", "try_anyway"}  # added after 0.1.0
    since |= {"together"} if runner is lk.sweep else set()  # issue 19
    assert set(parameters) == {"spec", *keywords, *since}
    assert {name: parameters[name].default for name in keywords} == keywords


def test_each_flag_is_declared_once_from_the_settings():
    for command in ("compare", "sweep"):
        # Every keyword a spec holds has a flag, but MixLoRA's settings (Python only).
        steering = {"out", "verbose"} | ({"with_full"} if command == "sweep" else set())
        assert set(cli.FLAGS[command]) == set(arguments(command)) - {"mixlora"} | steering
        assert len(cli.FLAGS[command]) == len(set(cli.FLAGS[command]))
    args = cli.build_parser().parse_args(["sweep", "--timeout", "5", "--ranks", "2,4"])
    values = cli._run_arguments(args)
    assert (values["ranks"], values["timeout_s"], values["verbose"]) == ([2, 4], 5.0, 1)
    assert arguments("sweep")["ranks"] == SWEEP_RANKS


def test_the_config_of_a_0_1_0_results_json_reads_and_writes_back_the_same():
    config = json.loads((DATA / "results_0_1_0" / "results.json").read_text())["config"]
    spec = RunSpec.from_json(config)
    # Settings 0.1.0 did not have take today's defaults: the MixLoRA reference's loss scope and
    # the held-out evaluation (issue 18).
    since = {"keep_data": None, "eval_documents": 32}
    expected = dict(config, mixlora={**config["mixlora"], "aux_loss_scope": "model"}, **since)
    assert spec.config() == expected
    # The report's configuration table keeps 0.1.0's order.
    assert [key for key in spec.config() if key not in since] == list(config)
    assert [(run.name, run.mode, run.rank) for run in spec.runs()] == [
        ("full", "full", None),
        ("lora", "lora", 2),
        ("mixlora", "mixlora", 8),
    ]


def test_a_spec_round_trips_through_json():
    spec = RunSpec(
        preset="gpt2_tiny",
        modes=("lora", "dora"),
        options=Options(chunked_loss=True),
        sample_prompts=["I like"],
        timeout_s=30,
    )
    assert spec.targets == ("query", "value") and spec.sample_prompts == ("I like",)
    assert RunSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec
    # results.json's config leaves out what it says elsewhere (samples) or only steers, and a
    # sweep's `together` (recorded by a sweep that trains together).
    assert set(spec.to_json()) - set(spec.config()) == {
        "sample_prompts",
        "options_sweep",
        "timeout_s",
        "try_anyway",
        "together",
    }
    sweep = RunSpec(preset="gpt2_tiny", kind="sweep", ranks=[1, 8], rank=None, modes=["lora"])
    assert set(sweep.config()) == SWEEP_CONFIG_0_1_0 | {"keep_data", "eval_documents"}
    assert [run.name for run in sweep.runs()] == ["lora_rank_1", "lora_rank_8"]
    # A benchmark's own kind, with its own runs, records what a comparison records.
    levers = RunSpec(preset="gpt2_tiny", kind="levers")
    assert levers.config() == dict(RunSpec(preset="gpt2_tiny").config(), kind="levers")
    with pytest.raises(ValueError, match=r"Unknown setting\(s\) \['epochs'\] in a run's desc"):
        RunSpec.from_json({"epochs": 3})


def test_torch_compile_is_refused_up_front_and_left_out_of_a_torch_options_sweep():
    with pytest.raises(
        ValueError,
        match=r"jit_compile \(--jit-compile\) cannot run on backend='torch' \(--backend torch\)"
        r".* recompiles each layer until dynamo's recompile limit.* --backend jax --jit-compile",
    ):
        RunSpec(preset="gpt2_tiny", backend="torch", options={"jit_compile": True})
    torch_sweep = RunSpec(preset="gpt2_tiny", backend="torch", modes=("lora",), options_sweep=True)
    names = [run.name for run in torch_sweep.runs()]
    assert "lora+xla" not in names and "lora+remat" in names
    tf_sweep = RunSpec(preset="gpt2_tiny", modes=("lora",), options_sweep=True)
    assert "lora+xla" in [run.name for run in tf_sweep.runs()]  # TensorFlow's XLA still runs


def test_a_spec_checks_itself_on_construction():
    with pytest.raises(ValueError, match=r"steps \(--steps\) must be at least 2, got 1"):
        RunSpec(steps=1)
    with pytest.raises(ValueError, match=r"ranks \(--ranks\) must be a list of integers"):
        RunSpec(kind="sweep", rank=None)
    with pytest.raises(ValueError, match="frozen_dtype='bfloat16' .* for mode 'full'"):
        RunSpec(preset="gpt2_tiny", options={"frozen_dtype": "bfloat16"})
    with pytest.raises(ValueError, match="mixed_precision must be one of"):
        Options(mixed_precision="fp8")
    with pytest.raises(ValueError, match=r"Unknown option\(s\) \['xla'\]"):
        Options.from_json({"xla": True})
    with pytest.raises(ValueError, match="Unknown mode 'qlora9'. Known modes: full, lora"):
        PlannedRun("x", "qlora9")
    spec = RunSpec(preset="gpt2_tiny", modes=("mixlora",), mixlora={"top_k": 1})
    assert spec.mixlora == dict(lk.mixlora.MIXLORA_DEFAULTS, top_k=1)


def test_importing_the_spec_starts_no_keras():
    code = (
        "import sys\n"
        "from lora_keras.experiments.run_spec import RunSpec\n"
        "RunSpec(preset='gpt2_tiny').runs()\n"
        "print([m for m in ('keras', 'tensorflow', 'jax', 'torch') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def planned(monkeypatch):
    """The spec each call of `compare` or `sweep` would run, without running it."""
    compare_module = importlib.import_module("lora_keras.experiments.compare")
    seen = []
    monkeypatch.setattr(compare_module, "run_experiment", lambda spec, **_: seen.append(spec))
    sweep_module = importlib.import_module("lora_keras.experiments.sweep")
    monkeypatch.setattr(sweep_module, "run_experiment", lambda spec, **_: seen.append(spec))
    return seen


def test_compare_takes_a_spec_or_its_keywords(monkeypatch):
    seen = planned(monkeypatch)
    spec = RunSpec(preset="gpt2_tiny", modes=("lora",))
    lk.compare(spec)
    lk.compare(preset="gpt2_tiny", modes=("lora",))
    lk.compare(spec, out="x", steps=3, remat=True)  # keywords replace the spec's own
    assert seen[0] == seen[1] == spec
    assert (seen[2].steps, seen[2].options.remat, seen[2].modes) == (3, True, ("lora",))
    with pytest.raises(TypeError, match="compare\\(\\) got an unexpected keyword argument 'ep"):
        lk.compare(epochs=3)


def test_sweep_takes_a_spec_or_its_keywords(monkeypatch):
    seen = planned(monkeypatch)
    lk.sweep(preset="gpt2_tiny", ranks=(1, 8), with_full=True)
    [spec] = seen
    assert (spec.kind, spec.ranks, spec.rank, spec.modes) == (
        "sweep",
        (1, 8),
        None,
        ("full", "lora"),
    )
    lk.sweep(spec)
    lk.sweep(spec, with_full=False)
    assert seen[1] == spec and seen[2].modes == ("lora",)
    assert lk.sweep(preset="gpt2_tiny") is None and seen[3].ranks == SWEEP_RANKS
    with pytest.raises(TypeError, match="sweep\\(\\) got an unexpected keyword argument 'modes'"):
        lk.sweep(modes=("dora",))
    with pytest.raises(ValueError, match="sweep\\(\\) takes a RunSpec of kind 'sweep', got kind"):
        lk.sweep(RunSpec(preset="gpt2_tiny"))


def test_the_child_reads_its_job_through_the_dataclasses():
    spec = RunSpec(preset="gpt2_tiny", modes=("lora",), rank=2)
    [run] = spec.runs()
    job = json.loads(json.dumps(job_json(spec, run)))
    assert read_job(job) == (spec, run)
    # A child file of lora_keras 0.1.0: one flat dict, the run's fields among the settings.
    flat = dict(spec.to_json(), name="lora", mode="lora", rank=2, verbose=0)
    flat["options"] = run.options.to_json()
    assert read_job(flat) == (spec, run)
    del flat["name"]
    assert read_job(flat)[1].name == "lora"  # named by its mode
