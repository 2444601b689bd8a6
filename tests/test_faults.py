"""Faults with real processes: a killed child, signals to the parent, two comparisons at once."""

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from lora_keras import cli

TINY = ["--preset", "gpt2_tiny", "--weights", "random", "--steps", "2", "--batch-size", "2"]
TINY += ["--sequence-length", "32", "--rank", "2"]


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    # The children inherit it: the tokenizer they train is cached away from the user's home.
    monkeypatch.setenv("LORA_KERAS_CACHE", str(tmp_path_factory.mktemp("cache")))


def start_compare(folder, *flags):
    command = [sys.executable, "-m", "lora_keras.cli", "compare", *TINY, *flags]
    return subprocess.Popen(
        command, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for(condition, timeout=120, what="a condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def child_of_run(out, name):
    """The child process training run `name` of the comparison in `out`."""
    spec = os.path.realpath(os.path.join(out, "runs", f"{name}.spec.json"))

    def find():
        for process in psutil.process_iter(["cmdline", "cwd"]):
            for argument in process.info["cmdline"] or []:
                # The default folder is relative to the comparison's working directory.
                path = os.path.join(process.info["cwd"] or "", argument)
                if argument.endswith(".spec.json") and os.path.realpath(path) == spec:
                    return process
        return None

    return wait_for(find, what=f"the child of {name}")


def results_of(out):
    with open(os.path.join(out, "results.json")) as file:
        return json.load(file)


def run_folder(cwd):
    root = cwd / "lora-keras-results"
    return wait_for(lambda: root.exists() and list(root.iterdir()), what="a results folder")


def test_a_child_killed_by_a_signal_is_recorded_as_killed_not_oom(tmp_path):
    parent = start_compare(tmp_path, "--modes", "lora")
    [out] = run_folder(tmp_path)
    child_of_run(str(out), "lora").send_signal(signal.SIGKILL)
    _, stderr = parent.communicate(timeout=120)
    assert parent.returncode == cli.EXIT_RUN_FAILED, stderr
    [run] = results_of(out)["runs"]
    assert run["status"] == "killed"
    assert run["error"] == "killed by signal 9 (SIGKILL); no Python error was raised"
    report = (out / "report.md").read_text()
    assert "| lora r=2 | killed |" in report and "killed by signal 9 (SIGKILL)" in report


@pytest.mark.parametrize(
    "stop",
    [
        signal.SIGTERM,
        pytest.param(signal.SIGHUP, marks=pytest.mark.large),
        pytest.param(signal.SIGINT, marks=pytest.mark.large),
    ],
)
def test_a_signal_to_the_parent_stops_the_child_and_saves_a_report(tmp_path, stop):
    parent = start_compare(tmp_path, "--modes", "full,lora")
    [out] = run_folder(tmp_path)
    child = child_of_run(str(out), "full")
    parent.send_signal(stop)
    _, stderr = parent.communicate(timeout=120)
    assert parent.returncode == cli.EXIT_INTERRUPTED, stderr
    assert f"interrupted by {stop.name}" in stderr and "Traceback" not in stderr
    wait_for(lambda: not child.is_running() or child.status() == psutil.STATUS_ZOMBIE, 10)
    saved = results_of(out)
    assert saved["interrupted"]["signal"] == stop.name
    assert [(run["mode"], run["status"]) for run in saved["runs"]] == [
        ("full", "interrupted"),
        ("lora", "not started"),
    ]
    report = (out / "report.md").read_text()
    assert f"**Incomplete: this comparison was interrupted by {stop.name}" in report
    assert "Missing results: full (interrupted), lora r=2 (not started)." in report
    assert "| full | interrupted |" in report and "| lora r=2 | not started |" in report


def wait_for_the_first_run(out):
    """Until the first of two runs has finished and the second is running."""
    wait_for(
        lambda: (
            (out / "results.json").exists()
            and [run["status"] for run in results_of(out)["runs"]] == ["ok", "running"]
        ),
        timeout=300,
        what="the first run to finish",
    )


@pytest.mark.large
def test_an_interrupted_comparison_keeps_the_runs_that_finished(tmp_path, capsys):
    parent = start_compare(tmp_path, "--modes", "full,lora")
    [out] = run_folder(tmp_path)
    wait_for_the_first_run(out)
    child = child_of_run(str(out), "lora")
    parent.send_signal(signal.SIGINT)
    parent.communicate(timeout=120)
    assert parent.returncode == cli.EXIT_INTERRUPTED
    wait_for(lambda: not child.is_running() or child.status() == psutil.STATUS_ZOMBIE, 10)
    full, lora = results_of(out)["runs"]
    assert full["status"] == "ok" and full["step_time_s"] > 0
    assert lora["status"] == "interrupted"
    assert sorted(p.name for p in out.glob("*.png")), "the finished run is drawn"
    # `lora-keras report` redraws it and says what is missing.
    assert cli.main(["report", str(out)]) == cli.EXIT_OK
    assert "incomplete comparison, missing: lora r=2 (interrupted)" in capsys.readouterr().err


@pytest.mark.large
def test_two_comparisons_at_once_into_the_default_folder_keep_their_own_runs(tmp_path):
    parents = {rank: start_compare(tmp_path, "--modes", "lora", "--rank", rank) for rank in "28"}
    for parent in parents.values():
        _, stderr = parent.communicate(timeout=600)
        assert parent.returncode == cli.EXIT_OK, stderr
    folders = sorted((tmp_path / "lora-keras-results").iterdir())
    assert len(folders) == 2
    ranks = set()
    for out in folders:
        [run] = results_of(out)["runs"]
        assert run["status"] == "ok"
        ranks.add(run["rank"])
        other = 8 if run["rank"] == 2 else 2
        report = (out / "report.md").read_text()
        assert f"| lora r={run['rank']} | ok |" in report and f"lora r={other}" not in report
        assert sorted(os.listdir(out / "runs")) == ["lora.json", "lora.log", "lora.spec.json"]
    assert ranks == {2, 8}


STARTUP_NOISE = ("cudart_stub", "cpu_feature_guard", "failed call to cuInit", "absl::Initialize")


@pytest.mark.large
def test_nohup_keeps_sighup_ignored_and_a_second_sigterm_waits_for_the_report(tmp_path):
    # As `nohup` starts it: SIGHUP ignored, which the comparison must leave ignored.
    command = [sys.executable, "-m", "lora_keras.cli", "compare", *TINY, "--modes", "lora,full"]
    parent = subprocess.Popen(
        command,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),
    )
    [out] = run_folder(tmp_path)
    wait_for_the_first_run(out)
    child = child_of_run(str(out), "full")
    parent.send_signal(signal.SIGHUP)
    time.sleep(1.0)
    assert parent.poll() is None and child.is_running(), "SIGHUP stopped a nohup comparison"
    # Two SIGTERMs 0.3 s apart: the second comes while results.json and report.md are written.
    parent.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    parent.send_signal(signal.SIGTERM)
    stdout, stderr = parent.communicate(timeout=120)
    assert parent.returncode == cli.EXIT_INTERRUPTED, stderr
    assert "interrupted by SIGTERM" in stderr and "Traceback" not in stderr
    lora, full = results_of(out)["runs"]
    assert (lora["status"], full["status"]) == ("ok", "interrupted")
    report = (out / "report.md").read_text()
    assert "**Incomplete: this comparison was interrupted by SIGTERM" in report
    assert "Measured on: CPU " in report  # the CPU that measured, named
    plots = [line.split("](")[1].rstrip(")") for line in report.splitlines() if "](" in line]
    assert plots and all((out / plot).exists() for plot in plots), plots
    # The first screen: none of TensorFlow's start-up notices (the parent never starts it).
    for noise in STARTUP_NOISE:
        assert noise not in stdout + stderr, noise


def test_an_ignored_signal_stays_ignored_and_a_second_one_is_held():
    from lora_keras.experiments.signals import Interrupted, stop_on_signals

    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with stop_on_signals() as stopping:
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert "SIGHUP" not in stopping.watched
            os.kill(os.getpid(), signal.SIGHUP)  # ignored: nothing happens
            with pytest.raises(Interrupted, match="SIGTERM"):
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(1)
            os.kill(os.getpid(), signal.SIGINT)  # while stopping: noted, not raised
            time.sleep(0.1)
            assert stopping.caught == "SIGTERM"
        with stop_on_signals() as stopping:
            stopping.hold()
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)
        assert stopping.caught == "SIGTERM"
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGHUP, previous)
