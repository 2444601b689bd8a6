import datetime
import importlib
import inspect
import json
import os
import signal
import subprocess
import sys
import types

import matplotlib.image
import pytest

import lora_keras as lk
from lora_keras import cli
from lora_keras.experiments.compare import choose_weights
from lora_keras.experiments.isolated_run import _classify_failure, run_isolated
from lora_keras.experiments.job_file import read_job
from lora_keras.experiments.results_folder import new_results_folder
from lora_keras.experiments.run_spec import PlannedRun
from lora_keras.experiments.runner import placeholder, run_specs

RUN_FIELDS = (
    "mode",
    "status",
    "trainable_params",
    "total_params",
    "stored_weight_bytes",
    "step_time_s",
    "first_step_s",
    "tokens_per_s",
    "peak_memory_bytes",
    "memory_source",
    "estimated_memory_bytes",
    "loss",
)


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    # The children inherit it: the tokenizer they train is cached away from the user's home.
    monkeypatch.setenv("LORA_KERAS_CACHE", str(tmp_path_factory.mktemp("cache")))


def tiny_spec(name, **changes):
    """A child's file in lora_keras 0.1.0's flat shape, which `read_job` still reads."""
    spec = {
        "name": name,
        "mode": "lora",
        "preset": "gpt2_tiny",
        "weights": "random",
        "data": "embedded",
        "steps": 2,
        "batch_size": 2,
        "sequence_length": 32,
        "rank": 2,
        "alpha": 4.0,
        "targets": ["query", "value"],
        "learning_rate": 1e-3,
        "seed": 0,
        "sample_prompts": [],
        "verbose": 0,
    }
    spec.update(changes)
    return spec


@pytest.mark.large
def test_tiny_compare_writes_a_complete_report(tmp_path, capsys):
    out = tmp_path / "report"
    results = lk.compare(
        preset="gpt2_tiny",
        weights="random",
        steps=3,
        batch_size=2,
        sequence_length=32,
        rank=2,
        out=str(out),
        sample_prompts=("I like basketball",),
    )
    saved = json.loads((out / "results.json").read_text())
    assert saved["runs"] == results["runs"]
    assert saved["config"]["modes"] == ["full", "lora"]
    for key in ("backend", "device", "cpu_count", "weights_source", "data_source"):
        assert saved["environment"][key], key
    full, lora = saved["runs"]
    for run in (full, lora):
        assert run["status"] == "ok", run.get("error")
        assert all(run.get(field) is not None for field in RUN_FIELDS)
        assert len(run["loss"]) == 3
        assert run["peak_memory_bytes"] > 0
        assert "process peak resident memory" in run["memory_source"]
    assert lora["trainable_params"] < full["trainable_params"] == full["total_params"]
    for run in (full, lora):
        [sample] = run["samples"]
        assert sample["prompt"] == "I like basketball" and sample["seconds"] > 0
        assert sample["text"].startswith("I like basketball")
    assert lora["estimate"]["optimizer_state"] == 2 * lora["trainable_params"] * 4

    report = (out / "report.md").read_text()
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs, "no plots were drawn"
    for name in pngs:
        assert f"]({name})" in report
        assert matplotlib.image.imread(out / name).shape[0] > 100
    printed = capsys.readouterr().out
    assert "[1/2] full" in printed and "[2/2] lora" in printed

    # `lora-keras report` redraws the same report from results.json alone.
    (out / "report.md").unlink()
    assert cli.main(["report", str(out)]) == 0
    assert (out / "report.md").read_text() == report


@pytest.mark.large
def test_a_failed_run_is_recorded_and_the_next_one_finishes(tmp_path):
    spec, _ = read_job(tiny_spec("lora"))
    # A rank the spec never checked (its own is 2): the child's apply_lora refuses it.
    runs = [PlannedRun("broken", "lora", 999), PlannedRun("lora", "lora", 2)]
    results = run_specs(spec, runs, str(tmp_path / "out"), echo=False)
    broken, finished = results["runs"]
    assert broken["status"] == "failed"
    assert "ValueError" in broken["error"] and "LoRA rank 999 is larger" in broken["error"]
    assert finished["status"] == "ok"
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [run["status"] for run in saved["runs"]] == ["failed", "ok"]
    assert saved["config"] == spec.config()
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Failed runs\n\n### lora r=999: failed" in report
    assert "LoRA rank 999 is larger" in report


def test_an_unknown_mode_in_a_spec_is_refused():
    from lora_keras.experiments.train_one import train_one

    with pytest.raises(ValueError, match="Unknown mode 'qlora9'. Known modes: full, lora"):
        train_one(*read_job(tiny_spec("x", mode="qlora9")))


def test_a_run_past_its_timeout_is_killed_and_recorded(tmp_path):
    spec, run = read_job(tiny_spec("slow"))
    record = run_isolated(spec, run, str(tmp_path), echo=False, timeout_s=0.5)
    assert record["status"] == "timeout"
    assert record["error"] == "killed after 0.5 s (timeout)"
    assert (record["name"], record["mode"], record["rank"]) == ("slow", "lora", 2)
    # What the child was given: the spec and its run, each read back through its dataclass.
    job = json.loads((tmp_path / "slow.spec.json").read_text())
    assert sorted(job) == ["run", "spec"]
    assert read_job(job) == (spec, run)


@pytest.mark.parametrize(
    "returncode, tail, status",
    [
        (1, "tensorflow.python.framework.errors_impl.ResourceExhaustedError: OOM when", "oom"),
        (1, "torch.OutOfMemoryError: CUDA out of memory", "oom"),
        (-9, "", "killed"),
        (-15, "", "killed"),
        (1, "ValueError: bad", "failed"),
    ],
)
def test_failures_are_classified(returncode, tail, status):
    assert _classify_failure(returncode, tail) == status


def test_an_existing_folder_is_never_reused_even_empty(tmp_path):
    (tmp_path / "empty").mkdir()
    for existing in (tmp_path, tmp_path / "empty"):
        with pytest.raises(FileExistsError, match="already exists. Choose a new --out folder"):
            new_results_folder(str(existing), "compare")
    assert new_results_folder(str(tmp_path / "new"), "compare") == str(tmp_path / "new")


def test_default_weights_follow_the_network(monkeypatch):
    monkeypatch.setattr(lk.models, "pretrained_reachable", lambda: False)
    assert choose_weights("gpt2_base_en", None) == (
        "random",
        "NO NETWORK: the KerasHub download host did not answer",
    )
    monkeypatch.setattr(lk.models, "pretrained_reachable", lambda: True)
    assert choose_weights("gpt2_base_en", None)[0] == "pretrained"
    assert choose_weights("gpt2_tiny", None)[0] == "random"
    assert choose_weights("gpt2_base_en", "random") == ("random", "weights='random' as asked")
    with pytest.raises(ValueError, match="weights \\(--weights\\) must be 'pretrained' or 'ra"):
        choose_weights("gpt2_base_en", "best")
    with pytest.raises(ValueError, match="Unknown preset \\(--preset\\) 'gpt2_bsae_en'. Known"):
        choose_weights("gpt2_bsae_en", None)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"modes": ("full", "qlora9")},
            "Unknown mode\\(s\\) \\['qlora9'\\] in modes \\(--modes\\). Known: full, lora",
        ),
        ({"steps": 1}, "steps \\(--steps\\) must be at least 2, got 1"),
        ({"targets": ("query", "vaule")}, "Unknown LoRA target\\(s\\) \\['vaule'\\]"),
    ],
)
def test_compare_refuses_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        lk.compare(preset="gpt2_tiny", out=str(tmp_path / "x"), **kwargs)
    assert not (tmp_path / "x").exists()


def test_sweep_refuses_bad_ranks(tmp_path):
    with pytest.raises(ValueError, match="ranks \\(--ranks\\) must be at least 1, got 0"):
        lk.sweep(ranks=(4, 0), preset="gpt2_tiny", out=str(tmp_path / "x"))


def test_cli_lists_are_trimmed():
    args = cli.build_parser().parse_args(
        ["compare", "--targets", "query, value", "--modes", "full ,lora"]
    )
    assert args.targets == ["query", "value"] and args.modes == ["full", "lora"]


def test_cli_version_and_errors(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"lora-keras {lk.__version__}"
    assert cli.main(["report", str(tmp_path / "missing")]) == 2
    assert "lora-keras: error:" in capsys.readouterr().err


class FakeTensorFlow:
    """Stands in for `tensorflow` with one GPU, recording memory-growth requests."""

    def __init__(self, initialized):
        self.grown = []
        fake = self

        class Experimental:
            @staticmethod
            def set_memory_growth(gpu, value):
                if initialized:
                    raise RuntimeError(
                        "Physical devices cannot be modified after being initialized"
                    )
                fake.grown.append((gpu, value))

        class Config:
            experimental = Experimental

            @staticmethod
            def list_physical_devices(kind):
                return ["GPU:0"] if kind == "GPU" else []

        self.config = Config


@pytest.mark.parametrize("initialized", [False, True])
def test_the_calling_process_lets_go_of_the_gpu(monkeypatch, capsys, initialized):
    from lora_keras.experiments.compare import keep_this_process_off_the_gpu

    fake = FakeTensorFlow(initialized)
    monkeypatch.setitem(__import__("sys").modules, "tensorflow", fake)
    keep_this_process_off_the_gpu()
    if initialized:
        assert "already initialized the GPU" in capsys.readouterr().out
    else:
        assert fake.grown == [("GPU:0", True)]


@pytest.mark.large
def test_tiny_sweep_from_the_command_line(tmp_path):
    out = tmp_path / "sweep"
    arguments = ["sweep", "--preset", "gpt2_tiny", "--weights", "random", "--ranks", "1,8"]
    arguments += ["--steps", "2", "--batch-size", "2", "--sequence-length", "32", "--out", str(out)]
    assert cli.main([*arguments, "--with-full"]) == 0
    saved = json.loads((out / "results.json").read_text())
    assert saved["config"]["kind"] == "sweep" and saved["config"]["ranks"] == [1, 8]
    assert saved["config"]["modes"] == ["full", "lora"]
    assert [(run["mode"], run["rank"], run["status"]) for run in saved["runs"]] == [
        ("full", None, "ok"),
        ("lora", 1, "ok"),
        ("lora", 8, "ok"),
    ]
    _, one, eight = saved["runs"]
    assert eight["trainable_params"] == 8 * one["trainable_params"]
    report = (out / "report.md").read_text()
    assert all(f"]({p.name})" in report for p in out.glob("*.png"))


def test_the_tokenizer_is_trained_before_any_measured_run(tmp_path, monkeypatch):
    from lora_keras.experiments.compare import warm_tokenizer_cache

    cache = tmp_path / "cache"
    monkeypatch.setenv("LORA_KERAS_CACHE", str(cache))
    warm_tokenizer_cache("gpt2_tiny", "pretrained", "embedded")
    assert not cache.exists()
    warm_tokenizer_cache("gpt2_tiny", "random", "embedded")
    [folder] = (cache / "tokenizers").iterdir()
    # The one a child builds for the same run is found in the cache, not trained again.
    lm = lk.load_gpt2("gpt2_tiny", weights="random")
    assert str(folder) in lm.provenance["tokenizer"]
    assert len(list((cache / "tokenizers").iterdir())) == 1


def test_default_folders_are_unique_even_in_the_same_second(tmp_path, monkeypatch):
    folder_module = importlib.import_module("lora_keras.experiments.results_folder")
    monkeypatch.chdir(tmp_path)
    suffixes = iter(["aaaa", "aaaa", "bbbb"])
    monkeypatch.setattr(folder_module.secrets, "token_hex", lambda n: next(suffixes))
    noon = datetime.datetime(2026, 11, 28, 12, 0, 0)
    monkeypatch.setattr(folder_module, "datetime", types.SimpleNamespace(datetime=FixedClock(noon)))
    first = new_results_folder(None, "compare")
    second = new_results_folder(None, "compare")  # the same name is taken: it draws again
    assert first == f"lora-keras-results/compare-20261128-120000-{os.getpid()}-aaaa"
    assert second == f"lora-keras-results/compare-20261128-120000-{os.getpid()}-bbbb"
    assert len(list((tmp_path / "lora-keras-results").iterdir())) == 2


class FixedClock:
    def __init__(self, moment):
        self.moment = moment

    def now(self, tz=None):
        return self.moment


def test_only_lora_family_runs_carry_a_rank(tmp_path, monkeypatch):
    compare_module = importlib.import_module("lora_keras.experiments.compare")
    planned = []
    monkeypatch.setattr(
        compare_module, "run_experiment", lambda spec, **_: planned.extend(spec.runs())
    )
    lk.compare(preset="gpt2_tiny", modes=("full", "lora"), rank=4, out=str(tmp_path / "x"))
    assert [(run.name, run.mode, run.rank) for run in planned] == [
        ("full", "full", None),
        ("lora", "lora", 4),
    ]


def test_the_failure_text_is_the_python_error_without_logs_or_colours():
    from lora_keras.experiments.isolated_run import error_text

    log = (
        "\x1b[1m1/2\x1b[0m \x1b[32m━━━━\x1b[0m\r\x1b[1m2/2\x1b[0m loss: 3.1\n"
        "I0000 00:00:1795876565.820238    5923 cudart_stub.cc:31] Could not find cuda drivers\n"
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
        "Traceback (most recent call last):\n"
        '  File "train_one.py", line 3, in <module>\n'
        "    fit()\n"
        "    ^^^^^\n"
        "ValueError: the texts are empty\n"
    )
    assert error_text(1, log) == "ValueError: the texts are empty"
    assert error_text(-15, log) == "killed by signal 15 (SIGTERM); no Python error was raised"
    assert error_text(3, "I0000 00:00:17.1  5 x.cc:1] noise\nlast words\n") == (
        "exit code 3: last words"
    )


def test_a_non_finite_loss_marks_the_run():
    from lora_keras.experiments.train_one import _mark_non_finite_loss

    record = {"status": "ok", "error": None, "loss": [3.0, float("nan"), float("nan")]}
    _mark_non_finite_loss(record)
    assert record["status"] == "non-finite loss"
    assert record["error"].startswith("the training loss became nan at step 2: training diverged")
    finite = {"status": "ok", "error": None, "loss": [3.0, 2.0]}
    _mark_non_finite_loss(finite)
    assert finite["status"] == "ok"


def test_a_failed_start_leaves_no_folder(tmp_path, monkeypatch):
    compare_module = importlib.import_module("lora_keras.experiments.compare")

    def broken(*args):
        raise RuntimeError("tokenizer training failed")

    monkeypatch.setattr(compare_module, "warm_tokenizer_cache", broken)
    with pytest.raises(RuntimeError, match="tokenizer training failed"):
        lk.compare(preset="gpt2_tiny", weights="random", steps=2, out=str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_sigterm_before_the_first_run_leaves_no_folder(tmp_path, monkeypatch, capsys):
    compare_module = importlib.import_module("lora_keras.experiments.compare")
    monkeypatch.setattr(
        compare_module, "warm_tokenizer_cache", lambda *a: os.kill(os.getpid(), signal.SIGTERM)
    )
    argv = ["compare", "--preset", "gpt2_tiny", "--weights", "random", "--steps", "2"]
    assert cli.main([*argv, "--out", str(tmp_path / "out")]) == cli.EXIT_INTERRUPTED
    assert "interrupted by SIGTERM before any run started" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    # The handlers are put back once the comparison ends.
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def planned_specs(monkeypatch, **kwargs):
    """The runs and results.json config `compare` would run, without training or a tokenizer."""
    compare_module = importlib.import_module("lora_keras.experiments.compare")
    seen = {}

    def run_specs(spec, runs, out, **_):
        seen.update(spec=spec, runs=runs)
        return {}

    monkeypatch.setattr(compare_module, "run_specs", run_specs)
    monkeypatch.setattr(compare_module, "warm_tokenizer_cache", lambda *a: None)
    lk.compare(preset="gpt2_tiny", weights="random", **kwargs)
    return seen["runs"], seen["spec"].config()


# Keywords of `compare` that results.json does not record as config: where the results go, how
# much to show, the prompts (in each run's samples), the sweep (in each run's options), the limit.
# What steers a comparison without describing it (try_anyway: the planner's check, skipped).
NOT_CONFIG = (
    *("spec", "out", "verbose", "sample_prompts", "timeout_s", "options_sweep", "try_anyway"),
)


def test_results_config_holds_the_settings_and_nothing_else(tmp_path, monkeypatch):
    _, config = planned_specs(monkeypatch, modes=("lora", "mixlora"), out=str(tmp_path / "x"))
    settings = set(inspect.signature(lk.compare).parameters)
    assert set(config) == settings - set(NOT_CONFIG) | {"kind", "ranks"}
    assert config["mixlora"] == lk.mixlora.MIXLORA_DEFAULTS


def test_unfinished_runs_are_labelled_with_their_own_rank_and_options(tmp_path, monkeypatch):
    from lora_keras.report.results import run_label

    def labels(**settings):
        out = str(tmp_path / "+".join(settings["modes"]))  # a new folder each
        runs, _ = planned_specs(monkeypatch, out=out, **settings)
        return [run_label(placeholder(run, "not started")) for run in runs]

    # MixLoRA's own rank, not compare's; an options sweep's runs by their lever.
    assert labels(modes=("lora", "mixlora"), rank=4, mixlora={"rank": 2}) == [
        "lora r=4",
        "mixlora r=2",
    ]
    levers = ["", " xla", " bfloat16", " frozen_bfloat16", " remat", " chunked_loss"]
    assert labels(modes=("lora",), rank=4, options_sweep=True) == [
        f"lora r=4{lever}" for lever in levers
    ]


def test_a_mixlora_only_comparison_does_not_check_the_lora_rank(tmp_path, monkeypatch):
    # gpt2_tiny's query and value are 128 wide: rank 999 would be refused for LoRA.
    out = str(tmp_path / "x")
    runs, _ = planned_specs(monkeypatch, modes=("full", "mixlora"), rank=999, out=out)
    assert [run.rank for run in runs] == [None, 8]


@pytest.mark.parametrize(
    "mixlora, message",
    [
        ({"experts": 4}, r"Unknown mixlora= setting\(s\) \['experts'\]. Known: num_experts,"),
        (
            {"num_experts": 0, "top_k": 1},
            r"mixlora= num_experts must be 1 to 64 \(the MixLoRA paper",
        ),
        ({"num_experts": 2.5}, "mixlora= num_experts must be an integer, got 2.5"),
        ({"num_experts": 4, "top_k": 5}, r"mixlora= top_k must be 1 to 4 \(num_experts\), got 5"),
        ({"rank": 0}, "mixlora= rank must be 1 to 128 .* feed-forward block.*, got 0"),
        ({"rank": 129}, "mixlora= rank must be 1 to 128 .*, got 129"),
        ({"variant": "vera"}, "mixlora= variant must be one of lora, dora, got 'vera'"),
    ],
)
def test_bad_mixlora_settings_are_refused_before_any_run(tmp_path, mixlora, message):
    with pytest.raises(ValueError, match=message):
        lk.compare(preset="gpt2_tiny", modes=("mixlora",), mixlora=mixlora, out=str(tmp_path / "x"))
    assert not (tmp_path / "x").exists()


def test_bad_mixlora_settings_are_refused_without_starting_keras():
    code = (
        "import sys, lora_keras as lk\n"
        "try:\n"
        "    lk.compare(preset='gpt2_tiny', modes=('mixlora',), mixlora={'top_k': 9})\n"
        "except ValueError as error:\n"
        "    print('RESULT', 'keras' in sys.modules, error)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("RESULT False mixlora= top_k must be 1 to 8"), out.stdout


def test_the_environment_names_the_commit_that_measured(monkeypatch):
    from lora_keras.experiments import environment

    here = subprocess.run(
        ["git", "-C", os.path.dirname(environment.__file__), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
    )
    if here.returncode != 0:
        pytest.skip("not run from a git checkout")
    assert environment._source_commit() == here.stdout.strip() != ""
    refused = subprocess.CompletedProcess([], 128, stdout="", stderr="not a git repository")
    monkeypatch.setattr(environment.subprocess, "run", lambda *args, **kwargs: refused)
    assert environment._source_commit() is None


def test_mixlora_alone_says_its_own_rank_applies(tmp_path, monkeypatch, capsys):
    out = str(tmp_path / "x")
    runs, config = planned_specs(monkeypatch, modes=("mixlora",), rank=16, out=out)
    assert [run.rank for run in runs] == [8]
    assert config["rank"] is None and config["mixlora"]["rank"] == 8
    assert (
        "note: rank (--rank) 16 is the rank of the LoRA-family modes; mixlora trains experts of "
        "MixLoRA's own rank, 8 (set by compare(mixlora={'rank': ...})), so results.json's "
        "config records rank null." in capsys.readouterr().out
    )


def test_a_full_disk_names_the_folder_and_marks_the_run_failed(tmp_path, monkeypatch, capsys):
    import errno

    runner = importlib.import_module("lora_keras.experiments.runner")
    compare_module = importlib.import_module("lora_keras.experiments.compare")
    monkeypatch.setattr(compare_module, "warm_tokenizer_cache", lambda *a: None)
    finished = {"status": "ok", "step_time_s": 0.1, "loss": [3.0, 2.0]}
    monkeypatch.setattr(
        runner, "run_isolated", lambda spec, run, folder, **kw: {**run.to_json(), **finished}
    )
    written = runner.atomic_write_json

    def full_disk(path, results):
        # The finished run's record no longer fits; the smaller failed entry still does.
        if any(run.get("step_time_s") for run in results["runs"]):
            raise OSError(errno.ENOSPC, "No space left on device", path + ".tmp")
        written(path, results)

    monkeypatch.setattr(runner, "atomic_write_json", full_disk)
    out = tmp_path / "out"
    argv = ["compare", "--preset", "gpt2_tiny", "--weights", "random", "--modes", "lora"]
    assert cli.main([*argv, "--steps", "2", "--out", str(out)]) == cli.EXIT_REPORT_INCOMPLETE
    error = capsys.readouterr().err
    assert (
        f"lora-keras: error: could not write {out}/results.json: No space left on device. The "
        f"disk holding {out} is full or read-only" in error
    )
    [run] = json.loads((out / "results.json").read_text())["runs"]
    assert run["status"] == "failed"
    assert run["error"].startswith(f"its results could not be saved: could not write {out}")


def test_the_start_up_notices_of_tensorflow_in_this_process_are_dropped(capfd, monkeypatch):
    from lora_keras.experiments.quiet_logs import quiet_startup

    monkeypatch.delitem(sys.modules, "tensorflow")  # as in a process where it is yet to start

    notices = (
        b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
        b"I0000 00:00:1796421192.005511   18743 cudart_stub.cc:31] Could not find cuda drivers\n"
        b"E0000 00:00:1.0  1 cuda_executor.cc:1] failed call to cuInit: UNKNOWN ERROR (303)\n"
        b"W0000 00:00:1.0  1 real.cc:1] a real warning\n"
    )
    with quiet_startup():
        os.write(2, notices)
    assert capfd.readouterr().err == "W0000 00:00:1.0  1 real.cc:1] a real warning\n"
    with quiet_startup(enabled=False):  # --verbose: all of it
        os.write(2, notices)
    assert capfd.readouterr().err == notices.decode()
