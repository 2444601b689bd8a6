"""`lora-keras sweep --together`: K ranks as adapters of one frozen model against K runs alone."""

import json
import os

import keras
import keras_hub
import numpy as np
import pytest
from conftest import TINY_GPT2, make_tiny_lm, next_token_dataset

import lora_keras as lk
from lora_keras import cli
from lora_keras.data.array_batches import ArrayBatches
from lora_keras.experiments.run_spec import RunSpec
from lora_keras.experiments.together import together_batches
from lora_keras.gpt2_surgery import lora_layers, multi_lora_layers, turn_off_dropout
from lora_keras.multi_lora import seed_lora_a
from lora_keras.report.markdown import render_markdown
from lora_keras.report.results import load_results

TINY_SWEEP = ["sweep", "--preset", "gpt2_tiny", "--weights", "random", "--steps", "3"]
TINY_SWEEP += ["--batch-size", "2", "--sequence-length", "32", "--eval-documents", "2"]
SAVED_0_1_0 = os.path.join(os.path.dirname(__file__), "data", "results_0_1_0")


@pytest.fixture(scope="module")
def together_sweep(tmp_path_factory):
    """One tiny sweep of ranks 1 and 4 with --together: three processes, shared by the tests.

    With --remat on every run: the blocks recomputed in the backward pass must still route
    each sequence to its adapter.
    """
    out = tmp_path_factory.mktemp("together") / "sweep"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LORA_KERAS_CACHE", str(tmp_path_factory.mktemp("cache")))
        arguments = [*TINY_SWEEP, "--ranks", "1,4", "--together", "--learning-rate", "1e-3"]
        arguments += ["--remat"]
        status = cli.main([*arguments, "--out", str(out)])
    return status, out, json.loads((out / "results.json").read_text())


@pytest.mark.large
def test_each_adapter_trained_together_takes_its_own_runs_steps(together_sweep):
    status, _, results = together_sweep
    assert status == 0 and results["config"]["remat"] is True
    assert [run["name"] for run in results["runs"]] == [
        "lora_rank_1",
        "lora_rank_4",
        "lora_together",
    ]
    *alone, together = results["runs"]
    assert [adapter["rank"] for adapter in together["adapters"]] == [1, 4]
    for adapter, run in zip(together["adapters"], alone, strict=True):
        assert run["rank"] == adapter["rank"] and len(adapter["loss"]) == 3
        np.testing.assert_allclose(adapter["loss"], run["loss"], rtol=1e-4)
        after = adapter["eval"]["target"]["after"]
        np.testing.assert_allclose(after, run["eval"]["target"]["after"], rtol=1e-4)
        assert after != adapter["eval"]["target"]["before"]  # it trained
    ones, fours = together["adapters"]
    assert ones["loss"][-1] != fours["loss"][-1]  # two adapters, not one twice
    for run in results["runs"]:  # both sides alike, and said so
        assert run["matched"]["dropout"] == 0.0 and run["matched"]["preset_dropout"] == [0.1]
        assert run["matched"]["global_clipnorm"] is None and "seed" in run["matched"]["a_init"]
    assert together["tokens_per_s"] == pytest.approx(2 * 2 * 32 / together["step_time_s"])


@pytest.mark.large
def test_a_together_sweep_reads_back_and_reports_the_comparison(together_sweep):
    _, out, results = together_sweep
    assert results["config"]["together"] is True
    assert load_results(out)["runs"] == results["runs"]
    report = (out / "report.md").read_text()
    section = report.split("## Trained together")[1].split("\n## ")[0]
    assert "lora together r=1,4" in section and "(2 of them finished)" in section
    for row in ("wall time", "tokens/s summed", "peak memory", "against the largest"):
        assert row in section
    assert "| rank_4 | 4 |" in section and "](together.png)" in report
    assert (out / "together.png").stat().st_size > 0
    (out / "report.md").unlink()
    assert cli.main(["report", str(out)]) == 0
    assert (out / "report.md").read_text() == report


def test_a_report_of_0_1_0_has_no_together_section():
    report = render_markdown(load_results(SAVED_0_1_0), [])
    assert "## Trained together" not in report and "mixlora r=8" in report


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--ranks", "4"], "give at least two ranks (--ranks 4,8), got [4]"),
        (["--ranks", "2,4", "--chunked-loss"], "chunked_loss (--chunked-loss): the chunked loss"),
        (["--ranks", "2,4", "--data-parallel"], "data_parallel (--data-parallel): each adapter"),
    ],
)
def test_what_cannot_train_together_is_refused_before_any_folder(
    tmp_path, capsys, arguments, message
):
    out = tmp_path / "never"
    assert cli.main([*TINY_SWEEP, *arguments, "--together", "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert "together (--together)" in error and message in error
    assert not out.exists()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"modes": ("lora", "dora")}, "plain LoRA adapters (mode lora)"),
        ({"kind": "compare", "rank": 4}, "use lk.sweep(..., together=True)"),
    ],
)
def test_a_spec_that_cannot_train_together_is_refused(settings, message):
    base = {"kind": "sweep", "ranks": (2, 4), "rank": None, "modes": ("lora",)}
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        RunSpec(preset="gpt2_tiny", together=True, **{**base, **settings})


def test_a_together_sweep_plans_one_more_run_and_full_stays_a_baseline():
    spec = RunSpec(kind="sweep", ranks=(2, 4), rank=None, modes=("full", "lora"), together=True)
    assert [(run.name, run.rank, run.together) for run in spec.runs()] == [
        ("full", None, ()),
        ("lora_rank_2", 2, ()),
        ("lora_rank_4", 4, ()),
        ("lora_together", None, (2, 4)),
    ]
    plain = RunSpec(kind="sweep", ranks=(2, 4), rank=None, modes=("lora",))
    assert "together" not in plain.config()  # as results.json was before it existed


def test_each_rank_starts_from_the_same_a_alone_and_together():
    alone, together = make_tiny_lm(), make_tiny_lm()
    lk.apply_lora(alone, rank=4)
    lk.apply_multi_lora(together, {"two": {"rank": 2}, "four": {"rank": 4}})
    seed_lora_a(alone, 7), seed_lora_a(together, 7)
    for path, layer in multi_lora_layers(together).items():
        own = np.asarray(lora_layers(alone)[path].lora_kernel_a)
        np.testing.assert_array_equal(layer.get_adapter(1)["lora_kernel_a"], own)
        assert not np.array_equal(layer.get_adapter(0)["lora_kernel_a"], own[..., :2])
        assert np.all(np.asarray(layer.lora_kernel_a)[0, ..., 2:] == 0)  # the padding
        bound = 1 / np.sqrt(own.shape[0])
        assert 0.5 * bound < np.abs(own).max() <= bound


def test_dropout_turned_off_trains_alike_in_a_batch_of_another_size():
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.GPT2Backbone(**TINY_GPT2, dropout=0.1)  # as GPT-2's presets
    lm = keras_hub.models.GPT2CausalLM(backbone, preprocessor=None)
    x, _ = next_token_dataset(batch_size=2)
    doubled = {key: np.concatenate([value, value]) for key, value in x.items()}

    def first_two(inputs):
        return np.asarray(lm(inputs, training=True))[:2]

    assert not np.allclose(first_two(doubled), first_two(x))  # other masks: other outputs
    assert turn_off_dropout(lm) == [0.1]
    np.testing.assert_allclose(first_two(doubled), first_two(x), rtol=1e-5, atol=1e-6)


def test_together_batches_weigh_each_adapter_as_its_own_run():
    x, y = next_token_dataset(batch_size=4)
    weights = np.ones(y.shape, "float32")
    weights[0, -5:] = 0.0  # padding: its own run counts it out, and divides by every token
    together = together_batches(ArrayBatches((x, y, weights), 2), 3)
    assert len(together) == 2
    first_x, first_y, first_weights = keras.tree.map_structure(np.asarray, next(iter(together)))
    np.testing.assert_array_equal(first_x["adapter_ids"], [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(first_y, np.concatenate([y[:2]] * 3))
    np.testing.assert_array_equal(first_weights, 3 * np.concatenate([weights[:2]] * 3))
