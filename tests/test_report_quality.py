"""The report's held-out section and learn/forget plot, drawn from results.json alone."""

import copy
import json
import pathlib

import pytest
from test_report import COMPARE, assert_real_png, write

from lora_keras.report import write_report


def _with_eval(results, weights="pretrained"):
    """COMPARE's runs with held-out losses: full learns most and forgets most."""
    data = copy.deepcopy(results)
    data["config"]["weights"] = weights
    losses = {"full": (3.0, 1.0, 2.0, 2.6), "lora": (3.0, 2.0, 2.0, 2.1)}  # target, keep
    for run in data["runs"]:
        if run["status"] == "ok":
            before, after, keep_before, keep_after = losses[run["mode"]]
            run["eval"] = {
                "target": {"before": before, "after": after, "tokens": 4096},
                "keep": {"before": keep_before, "after": keep_after, "tokens": 18568},
            }
            run["eval_time_s"] = 0.5
    return data


def test_the_section_measures_each_run_against_full_fine_tuning(tmp_path):
    write(tmp_path, _with_eval(COMPARE))
    report = pathlib.Path(write_report(tmp_path)).read_text()
    assert "## What it learned and what it forgot (held-out loss)" in report
    # lora: gain 1.0 of full's 2.0 (50%), forgot 0.1 against full's 0.6.
    assert "| lora r=4 | 3.0000 (ppl 20.1) | 2.0000 (ppl 7.4) | +1.0000 | 50% |" in report
    assert "| +0.1000 | +0.6000 | 147,456 |" in report
    assert "Held-out tokens: target 4,096, keep 18,568." in report
    assert "say nothing about quality" not in report
    assert_real_png(tmp_path / "learn_forget.png")
    assert "learn_forget.png" in report


def test_random_weights_are_said_to_measure_nothing_about_quality(tmp_path):
    write(tmp_path, _with_eval(COMPARE, weights="random"))
    report = pathlib.Path(write_report(tmp_path)).read_text()
    assert "their held-out losses say nothing about quality" in report


def test_without_eval_there_is_no_section_and_no_plot(tmp_path):
    write(tmp_path, COMPARE)
    report = pathlib.Path(write_report(tmp_path)).read_text()
    assert "held-out loss" not in report and not (tmp_path / "learn_forget.png").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda run: run["eval"]["target"].pop("after"), "eval.target.after must be a number"),
        (lambda run: run["eval"].update(keep=3.0), "runs[0].eval must be an object of objects"),
        (lambda run: run["eval"]["keep"].update(tokens=1.5), "eval.keep.tokens must be an integer"),
    ],
)
def test_a_hand_edited_eval_is_named(tmp_path, change, message):
    data = _with_eval(COMPARE)
    change(data["runs"][0])
    (tmp_path / "results.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        write_report(tmp_path)
    assert not (tmp_path / "report.md").exists()
