"""`compare` asks the memory planner first and refuses a run that cannot fit this machine."""

import pytest

from lora_keras import cli
from lora_keras.experiments.compare import refuse_what_cannot_fit
from lora_keras.experiments.run_spec import RunSpec

TOO_BIG = dict(preset="gpt2_large_en", weights="random", batch_size=32, sequence_length=1024)
CPU_HOST = {"cpu_model": "a CPU", "cpu_features": [], "gpus": []}


def test_a_run_that_cannot_fit_is_refused_with_the_planners_table(tmp_path, capsys):
    out = tmp_path / "report"
    argv = ["compare", "--preset", "gpt2_large_en", "--weights", "random", "--batch-size", "32"]
    code = cli.main([*argv, "--sequence-length", "1024", "--out", str(out)])
    error = capsys.readouterr().err
    assert code == cli.EXIT_BAD_INPUT and not out.exists()
    assert "The memory planner predicts that these runs will not fit this machine:" in error
    # Each run named with its prediction and what would help (what fits depends on the memory
    # this machine has free).
    assert "  full: predicted " in error and "  lora: predicted " in error
    assert error.count("would fit with: ") == 2
    assert "or pass --try-anyway (try_anyway=True)" in error


def test_try_anyway_a_gpu_or_an_unknown_shape_skip_the_check():
    spec = RunSpec(**TOO_BIG)
    with pytest.raises(ValueError, match="will not fit this machine"):
        refuse_what_cannot_fit(spec, spec.runs(), CPU_HOST)
    anyway = RunSpec(**TOO_BIG, try_anyway=True)
    assert refuse_what_cannot_fit(anyway, anyway.runs(), CPU_HOST) is None
    on_gpu = dict(CPU_HOST, gpus=["NVIDIA H200 (compute capability 9.0)"])
    assert refuse_what_cannot_fit(spec, spec.runs(), on_gpu) is None
    small = RunSpec(preset="gpt2_tiny", weights="random")
    assert refuse_what_cannot_fit(small, small.runs(), CPU_HOST) is None
