"""`lk.start_measuring_notebook`: the set-up every measuring notebook shares."""

import tensorflow as tf

import lora_keras as lk


def test_on_a_cpu_it_says_what_runs_here_and_hides_nothing(capsys, monkeypatch):
    hidden = []
    monkeypatch.setattr(tf.config, "set_visible_devices", lambda *args: hidden.append(args))
    on_gpu, on_colab, device = lk.start_measuring_notebook()
    assert (on_gpu, on_colab, hidden) == (False, False, [])
    assert device == lk.describe_environment()["device"]
    out = capsys.readouterr().out
    assert f"lora_keras {lk.__version__}, Keras " in out and f"device: {device}\n" in out


def test_on_a_gpu_it_hides_the_gpu_from_this_process(capsys, monkeypatch):
    hidden = []
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: ["GPU:0"])
    monkeypatch.setattr(tf.config, "set_visible_devices", lambda *args: hidden.append(args))
    monkeypatch.setattr(
        "lora_keras.experiments.environment.describe_environment", lambda: {"device": "GPU: T4"}
    )
    assert lk.start_measuring_notebook() == (True, False, "GPU: T4")
    assert hidden == [([], "GPU")]


def test_a_gpu_already_in_use_is_said_not_raised(capsys, monkeypatch):
    def refuse(*args):
        raise RuntimeError("Visible devices cannot be modified after being initialized")

    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: ["GPU:0"])
    monkeypatch.setattr(tf.config, "set_visible_devices", refuse)
    monkeypatch.setattr(
        "lora_keras.experiments.environment.describe_environment", lambda: {"device": "GPU: T4"}
    )
    assert lk.start_measuring_notebook()[0] is True
    assert "TensorFlow already holds the GPU here: restart the runtime" in capsys.readouterr().out


def test_a_notebook_setting_says_where_its_value_came_from(capsys):
    assert lk.notebook_setting("BATCH_SIZE", None, 4, "CPU runtime") == 4
    assert lk.notebook_setting("RANK", 8, 4, "the tutorial's rank") == 8
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["BATCH_SIZE", "=", "4", "(CPU", "runtime)"]
    assert lines[1].endswith("(set in the parameters cell)")
