"""`start_notebook`: the set-up cell every notebook shares, one behaviour a test."""

import os
import sys
import types

import keras
import pytest
import tensorflow as tf

import lora_keras as lk
from lora_keras.notebook import NotebookRuntime, start_notebook

CPU, GPU = "CPU (x86_64, 2 cores)", "GPU: Tesla T4 (x1)"


def parameters(**changes):
    """A parameters cell's namespace: the four settings every notebook has, left None."""
    return {"PRESET": None, "WEIGHTS": None, "NUM_BATCHES": None, "BATCH_SIZE": None, **changes}


@pytest.fixture
def runtime(monkeypatch):
    """Pretends to be a CPU or GPU runtime; records what is hidden from TensorFlow."""
    state = types.SimpleNamespace(hidden=[], device=CPU, online=False)
    monkeypatch.setattr(lk, "describe_environment", lambda: {"device": state.device})
    monkeypatch.setattr(
        tf.config,
        "list_physical_devices",
        lambda kind=None: ["GPU:0"] if state.device.startswith("GPU") else [],
    )
    monkeypatch.setattr(tf.config, "set_visible_devices", lambda *args: state.hidden.append(args))
    monkeypatch.setattr(lk, "pretrained_reachable", lambda: state.online)
    monkeypatch.setattr(lk, "choose_weights", lambda preset, weights: ("random", "as chosen"))
    return state


def printed(capsys):
    """The lines printed since the last call, keyed by the setting each names."""
    lines = capsys.readouterr().out.splitlines()
    return {line.split()[0]: line for line in lines if " = " in line}, lines


def test_on_a_cpu_every_none_becomes_the_cpu_choice_and_says_why(runtime, capsys):
    settings = parameters()
    result = start_notebook(settings)
    assert settings == {
        "PRESET": "gpt2_base_en",
        "WEIGHTS": "random",
        "NUM_BATCHES": 10,
        "BATCH_SIZE": 4,
    }
    assert result == NotebookRuntime(keras.config.backend(), CPU, on_gpu=False, on_colab=False)
    named, lines = printed(capsys)
    assert named["PRESET"].endswith("(the tutorial's model)")
    assert named["WEIGHTS"].endswith("(as chosen)")
    assert named["NUM_BATCHES"].split() == ["NUM_BATCHES", "=", "10", "(CPU", "runtime)"]
    assert lines[0].startswith(f"lora_keras {lk.__version__}, Keras ")
    assert f"device: {CPU}" in lines
    assert "No GPU: smaller settings than the tutorial's" in lines[-1]


def test_on_a_gpu_the_notebooks_own_choices_win_over_the_shared_ones(runtime, capsys):
    runtime.device = GPU
    settings = parameters(DATA="reddit_tifu", SWEEP_RANKS=None)
    result = start_notebook(
        settings, gpu={"NUM_BATCHES": 50, "SWEEP_RANKS": (1, 64)}, cpu={"SWEEP_RANKS": (1, 8)}
    )
    assert (settings["NUM_BATCHES"], settings["BATCH_SIZE"]) == (50, 32)
    assert settings["SWEEP_RANKS"] == (1, 64)
    assert result.on_gpu and result.device == GPU
    named, lines = printed(capsys)
    assert named["SWEEP_RANKS"].endswith("(GPU runtime)")
    assert not any(line.startswith("No GPU") for line in lines)


def test_a_value_set_in_the_parameters_cell_is_kept_and_said_so(runtime, capsys):
    settings = parameters(PRESET="gpt2_tiny", NUM_BATCHES=3, BATCH_SIZE=2)
    start_notebook(settings)
    assert (settings["PRESET"], settings["NUM_BATCHES"], settings["BATCH_SIZE"]) == (
        "gpt2_tiny",
        3,
        2,
    )
    named, _ = printed(capsys)
    for name in ("PRESET", "NUM_BATCHES", "BATCH_SIZE"):
        assert named[name].endswith("(set in the parameters cell)")


def test_weights_follow_choose_weights(runtime, monkeypatch):
    asked = []
    monkeypatch.setattr(
        lk, "choose_weights", lambda preset, weights: asked.append((preset, weights)) or ("x", "")
    )
    settings = parameters(PRESET="gpt2_tiny", WEIGHTS="random")
    start_notebook(settings)
    assert asked == [("gpt2_tiny", "random")] and settings["WEIGHTS"] == "x"


@pytest.mark.parametrize(
    "colab, online, data, why",
    [
        (False, True, "embedded", "off Colab"),
        (True, True, "reddit_tifu", "the tutorial's data, on Colab and online"),
        (True, False, "embedded", "offline"),
    ],
)
def test_data_is_the_tutorials_on_colab_when_online(
    runtime, monkeypatch, capsys, colab, online, data, why
):
    if colab:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    runtime.online = online
    settings = parameters(DATA=None)
    assert start_notebook(settings).on_colab is colab
    assert settings["DATA"] == data
    assert why in printed(capsys)[0]["DATA"]


def test_a_notebook_without_data_gets_none_added(runtime):
    settings = parameters()
    start_notebook(settings)
    assert "DATA" not in settings


def test_num_batches_is_lowered_to_what_the_embedded_corpus_holds(runtime, capsys):
    documents = len(lk.embedded_corpus())
    settings = parameters(DATA="embedded", NUM_BATCHES=documents, BATCH_SIZE=4)
    start_notebook(settings)
    assert settings["NUM_BATCHES"] == documents // 4
    expected = (
        f"NUM_BATCHES lowered to {documents // 4}: all the batches the embedded corpus holds."
    )
    assert expected in capsys.readouterr().out


def test_num_batches_is_not_lowered_for_other_data(runtime):
    settings = parameters(DATA="reddit_tifu", NUM_BATCHES=100_000, BATCH_SIZE=4)
    start_notebook(settings)
    assert settings["NUM_BATCHES"] == 100_000


def test_fewer_than_two_batches_are_refused(runtime):
    with pytest.raises(ValueError) as error:
        start_notebook(parameters(NUM_BATCHES=1))
    assert str(error.value) == (
        "NUM_BATCHES=1: at least 2 are needed, as the first step (tracing) is timed apart from "
        "the others."
    )


def test_a_batch_size_the_embedded_corpus_cannot_fill_twice_is_refused(runtime):
    documents = len(lk.embedded_corpus())
    with pytest.raises(ValueError) as error:
        start_notebook(parameters(DATA="embedded", BATCH_SIZE=documents))
    assert str(error.value) == (
        f"BATCH_SIZE={documents}: the embedded corpus's {documents} documents make fewer than 2 "
        "batches; at least 2 are needed, as the first step (tracing) is timed apart from the "
        "others. Lower BATCH_SIZE."
    )


def test_a_parameters_cell_without_the_four_settings_is_refused(runtime):
    with pytest.raises(ValueError) as error:
        start_notebook({"PRESET": None, "WEIGHTS": None})
    assert str(error.value) == (
        "The parameters cell sets no NUM_BATCHES, BATCH_SIZE: every notebook's parameters cell "
        "sets PRESET, WEIGHTS, NUM_BATCHES, BATCH_SIZE (None: chosen for this runtime)."
    )


def test_a_choice_for_one_runtime_only_is_refused(runtime):
    with pytest.raises(ValueError, match=r"^SWEEP_RANKS: chosen for one runtime only\. Give gpu="):
        start_notebook(parameters(SWEEP_RANKS=None), gpu={"SWEEP_RANKS": (1, 4)})


def test_a_choice_for_a_setting_the_parameters_cell_lacks_is_refused(runtime):
    with pytest.raises(ValueError) as error:
        start_notebook(parameters(), gpu={"RANKS": (1,)}, cpu={"RANKS": (1,)})
    assert str(error.value).startswith(
        "gpu= and cpu= choose RANKS, which the parameters cell does not set: add it there"
    )


@pytest.mark.parametrize(
    "changes, choices",
    [({}, {"gpu": {"RANKS": (1,)}, "cpu": {"RANKS": (1,)}}), ({"NUM_BATCHES": 1}, {})],
    ids=["bad choices", "too few batches"],
)
def test_a_refused_call_changes_no_setting(runtime, changes, choices):
    settings = parameters(**changes)
    with pytest.raises(ValueError):
        start_notebook(settings, **choices)
    assert settings == parameters(**changes)


def test_the_backend_is_tensorflow_unless_keras_backend_is_set(runtime, monkeypatch):
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    start_notebook(parameters())
    assert os.environ["KERAS_BACKEND"] == "tensorflow"
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    start_notebook(parameters())
    assert os.environ["KERAS_BACKEND"] == "jax"


def test_on_a_gpu_it_hides_the_gpu_when_the_runs_train_elsewhere(runtime):
    runtime.device = GPU
    start_notebook(parameters())
    assert runtime.hidden == [([], "GPU")]


def test_a_notebook_that_trains_here_keeps_the_gpu(runtime):
    runtime.device = GPU
    assert start_notebook(parameters(), trains_here=True).on_gpu
    assert runtime.hidden == []


def test_on_a_cpu_nothing_is_hidden(runtime):
    start_notebook(parameters())
    assert runtime.hidden == []


def test_a_gpu_already_in_use_is_said_not_raised(runtime, monkeypatch, capsys):
    def refuse(*args):
        raise RuntimeError("Visible devices cannot be modified after being initialized")

    runtime.device = GPU
    monkeypatch.setattr(tf.config, "set_visible_devices", refuse)
    assert start_notebook(parameters()).on_gpu
    assert "TensorFlow already holds the GPU here: restart the runtime" in capsys.readouterr().out


def test_a_notebook_setting_says_where_its_value_came_from(capsys):
    assert lk.notebook_setting("BATCH_SIZE", None, 4, "CPU runtime") == 4
    assert lk.notebook_setting("RANK", 8, 4, "the tutorial's rank") == 8
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["BATCH_SIZE", "=", "4", "(CPU", "runtime)"]
    assert lines[1].endswith("(set in the parameters cell)")
