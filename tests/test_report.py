import json
import os
import re

import matplotlib.figure
import matplotlib.image
import pytest

from lora_keras.report import write_report
from lora_keras.units import format_bytes

ENVIRONMENT = {
    "backend": "tensorflow",
    "keras_version": "3.15.1",
    "keras_hub_version": "0.32.0",
    "backend_version": "2.21.0",
    "python_version": "3.11.7",
    "platform": "Linux-x86_64",
    "device": "CPU (x86_64, 2 cores)",
    "cpu_count": 2,
    "weights_source": "random weights, gpt2_base_en architecture (no download)",
    "tokenizer_source": "byte-level BPE trained on the embedded corpus",
    "data_source": "embedded corpus (420 documents, generated in-package)",
}
SOURCE = "process peak resident memory since process start (getrusage ru_maxrss), CPU"


def run(mode, rank, step_time, peak, trainable, loss_start):
    estimate = {
        "weights": 500_000_000,
        "gradients": 4 * trainable,
        "optimizer_state": 8 * trainable,
        "activations": 600_000_000,
    }
    estimate["total"] = sum(estimate.values())
    return {
        "mode": mode,
        "rank": rank,
        "status": "ok",
        "error": None,
        "trainable_params": trainable,
        "total_params": 124_439_808,
        "stored_weight_bytes": 497_759_232,
        "step_time_s": step_time,
        "step_time_p25_s": 0.9 * step_time,
        "step_time_p75_s": 1.2 * step_time,
        "step_time_min_s": 0.8 * step_time,
        "step_time_max_s": 1.5 * step_time,
        "first_step_s": 12.1,
        "tokens_per_s": 512 / step_time,
        "steps": 6,
        "peak_memory_bytes": peak,
        "memory_source": SOURCE,
        "memory_over_steps": [peak - 10_000_000 * (5 - i) for i in range(6)],
        "memory_in_use_over_steps": [peak - 90_000_000 - 10_000_000 * (i % 2) for i in range(6)],
        "estimated_memory_bytes": estimate["total"],
        "estimate": estimate,
        "loss": [loss_start - 0.1 * i for i in range(6)],
        "wall_time_s": 60.2,
    }


def failed(mode, rank, status, error):
    return {"mode": mode, "rank": rank, "status": status, "error": error, "loss": None}


def results(kind, runs):
    config = {"kind": kind, "preset": "gpt2_base_en", "weights": "random", "data": "embedded"}
    config.update({"modes": ["full", "lora"], "steps": 6, "batch_size": 4, "sequence_length": 128})
    config.update({"rank": 4, "ranks": [1, 2, 4] if kind == "sweep" else None, "seed": 0})
    return {
        "schema_version": 1,
        "created": "2026-11-28T10:00:00Z",
        "environment": ENVIRONMENT,
        "config": config,
        "runs": runs,
    }


COMPARE = results(
    "compare",
    [
        run("full", None, 1.38, 5_123_456_789, 124_439_808, 10.9),
        {
            **run("lora", 4, 0.61, 2_100_000_000, 147_456, 10.8),
            "samples": [{"prompt": "The tree", "text": "The tree grows | tall.", "seconds": 1.2}],
        },
        failed("lora", 64, "oom", "ResourceExhaustedError: OOM when allocating tensor"),
    ],
)
SWEEP = results(
    "sweep",
    [run("full", None, 1.38, 5_123_456_789, 124_439_808, 10.9)]
    + [run("lora", r, 0.6 + 0.01 * r, 2_000_000_000 + r, 36_864 * r, 10.8) for r in (1, 2, 4)]
    + [failed("lora", 8, "timeout", "no result after 600 s")],
)


def write(folder, data):
    (folder / "results.json").write_text(json.dumps(data))


def embedded_images(markdown):
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)


def assert_real_png(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 5_000
    assert matplotlib.image.imread(path).shape[0] > 100


def test_compare_report_embeds_exactly_its_plots_and_lists_the_failure(tmp_path):
    write(tmp_path, COMPARE)
    path = write_report(tmp_path)
    markdown = (tmp_path / "report.md").read_text()
    assert path == os.path.join(tmp_path, "report.md")
    pngs = sorted(name for name in os.listdir(tmp_path) if name.endswith(".png"))
    assert pngs == ["loss.png", "memory.png", "memory_over_steps.png", "step_time.png"]
    assert sorted(embedded_images(markdown)) == pngs
    for name in pngs:
        assert_real_png(tmp_path / name)
    assert markdown.startswith("# full vs lora on gpt2_base_en: step time and peak memory")
    assert (
        "| lora r=4 | ok | 147,456 | 0.118% | 12.10 s | 610.0 ms | 0.44x | 839 | 474.70 MiB "
        "| 1.96 GiB |" in markdown
    )
    assert "| lora r=64 | oom | n/a |" in markdown
    assert "### lora r=64: oom\n\n```text\nResourceExhaustedError: OOM" in markdown
    assert f"| device | {ENVIRONMENT['device']} |" in markdown
    assert "- optimizer_state: 949.40 MiB" in markdown
    # lora: 2.1e9 bytes measured over an estimate of 1.1e9 + 12 x 147,456 bytes.
    assert "(1.91x the estimate)" in markdown
    assert "The tree grows | tall." in markdown


def test_redrawing_gives_the_same_report(tmp_path):
    write(tmp_path, COMPARE)
    write_report(tmp_path)
    first = (tmp_path / "report.md").read_text()
    write_report(tmp_path)
    assert (tmp_path / "report.md").read_text() == first


def test_sweep_report_adds_the_rank_plot(tmp_path):
    write(tmp_path, SWEEP)
    write_report(tmp_path)
    markdown = (tmp_path / "report.md").read_text()
    assert markdown.startswith("# LoRA rank sweep on gpt2_base_en")
    assert "sweep.png" in embedded_images(markdown)
    assert_real_png(tmp_path / "sweep.png")
    assert "### lora r=8: timeout" in markdown


def test_plots_without_data_are_neither_embedded_nor_left_behind(tmp_path):
    write(tmp_path, SWEEP)
    write_report(tmp_path)
    write(tmp_path, results("compare", [failed("full", None, "failed", "Traceback ...")]))
    write_report(tmp_path)
    markdown = (tmp_path / "report.md").read_text()
    assert embedded_images(markdown) == []
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".png")]
    assert "### full: failed" in markdown


def test_missing_results_is_an_error_naming_the_file(tmp_path):
    with pytest.raises(
        FileNotFoundError, match=re.escape(f"{tmp_path / 'results.json'} not found")
    ):
        write_report(tmp_path)


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "is not valid JSON"),
        (json.dumps({"schema_version": 2}), "has schema_version 2, but this lora_keras reads"),
        (json.dumps({"schema_version": 1, "runs": []}), "lacks environment, config: rerun"),
        (json.dumps({**COMPARE, "runs": [{"mode": "full"}]}), "runs[0] lacks status: rerun"),
    ],
)
def test_invalid_results_is_an_error_naming_the_file(tmp_path, content, message):
    (tmp_path / "results.json").write_text(content)
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "results.json"))) as error:
        write_report(tmp_path)
    assert message in str(error.value)


@pytest.mark.parametrize(
    "field, value, kind",
    [
        ("stored_weight_bytes", "big", "a number or null"),
        ("memory_checkpoints", {"peak": "high"}, "an object of numbers or null"),
        ("options", ["remat"], "an object or null"),
        ("mixlora", 8, "an object or null"),
        ("expert_loads", {"transformer_layer_0/ffn": [0.5, "x"]}, "an object of number lists"),
    ],
)
def test_fields_of_the_newer_runs_are_checked_before_drawing(tmp_path, field, value, kind):
    broken = results("compare", [{**run("lora", 4, 0.61, 2**31, 147_456, 10.8), field: value}])
    write(tmp_path, broken)
    with pytest.raises(ValueError, match=re.escape(f"runs[0].{field} must be {kind}")):
        write_report(tmp_path)
    assert os.listdir(tmp_path) == ["results.json"], "nothing is drawn from a file that is wrong"


def test_runtime_floor_is_shown_beside_the_estimate(tmp_path):
    with_runtime = results(
        "compare",
        [
            {
                **run("full", None, 1.38, 5_123_456_789, 124_439_808, 10.9),
                "runtime_memory_bytes": 2**30,
            }
        ],
    )
    write(tmp_path, with_runtime)
    write_report(tmp_path)
    markdown = (tmp_path / "report.md").read_text()
    floor = 2**30 + with_runtime["runs"][0]["estimate"]["total"]
    assert (
        "- runtime before the model was built (measured, same source): 1.00 GiB; "
        f"with the estimate: {format_bytes(floor)}." in markdown
    )
    assert_real_png(tmp_path / "memory.png")


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda data: data["runs"][0].update(step_time_s="fast"), "runs[0].step_time_s must be"),
        (lambda data: data["runs"][1].update(loss=["a"]), "runs[1].loss must be a list of num"),
        (lambda data: data["runs"][0].update(rank=True), "runs[0].rank must be an integer"),
        (lambda data: data.update(config=[]), "config must be an object, got []"),
        (lambda data: data.update(runs={}), "runs must be a list, got {}"),
        (lambda data: data["runs"][0].update(status=None), "runs[0].status must be a text"),
        (
            lambda data: data["runs"][1]["samples"][0].update(text=3),
            "runs[1].samples[0].text must be a text, got 3",
        ),
    ],
)
def test_a_hand_edited_wrong_type_is_named_and_nothing_is_written(tmp_path, change, message):
    data = json.loads(json.dumps(COMPARE))
    change(data)
    write(tmp_path, data)
    with pytest.raises(ValueError, match=re.escape(message)):
        write_report(tmp_path)
    assert os.listdir(tmp_path) == ["results.json"]


def test_no_runs_gives_a_sensible_title(tmp_path):
    write(tmp_path, results("compare", []))
    write_report(tmp_path)
    markdown = (tmp_path / "report.md").read_text()
    assert markdown.startswith("# No runs on gpt2_base_en: results.json lists none\n")
    assert "No runs were recorded: there is nothing to compare." in markdown


def test_an_interrupted_comparison_says_what_is_missing_in_the_report_and_plots(tmp_path):
    from lora_keras.report.plots import _missing_note

    data = results(
        "compare",
        [
            run("full", None, 1.38, 5_123_456_789, 124_439_808, 10.9),
            failed("lora", 4, "interrupted", "stopped by SIGTERM after 3.0 s"),
            {"mode": "lora", "rank": 8, "status": "not started"},
        ],
    )
    data["interrupted"] = {"signal": "SIGTERM", "at": "2026-11-28T10:05:00Z"}
    write(tmp_path, data)
    write_report(tmp_path)
    markdown = (tmp_path / "report.md").read_text()
    assert (
        "**Incomplete: this comparison was interrupted by SIGTERM at 2026-11-28T10:05:00Z.** "
        "Missing results: lora r=4 (interrupted), lora r=8 (not started)." in markdown
    )
    assert "### lora r=4: interrupted" in markdown and "### lora r=8" not in markdown
    assert (
        _missing_note(data["runs"]) == "Not shown: lora r=4 (interrupted), lora r=8 (not started)"
    )
    assert_real_png(tmp_path / "step_time.png")


def test_a_comparison_that_died_without_a_word_says_so(tmp_path):
    data = results(
        "compare",
        [
            run("full", None, 1.38, 5_123_456_789, 124_439_808, 10.9),
            {"mode": "lora", "rank": 4, "status": "running"},
        ],
    )
    write(tmp_path, data)
    write_report(tmp_path)
    markdown = (tmp_path / "report.md").read_text()
    assert "has runs that did not finish: it is still running, or its process ended" in markdown
    assert "Missing results: lora r=4 (running)." in markdown


def test_a_full_disk_while_plotting_keeps_results_and_says_what_failed(tmp_path, monkeypatch):
    import errno

    from lora_keras import cli
    from lora_keras.report import plots

    write(tmp_path, COMPARE)
    saved = (tmp_path / "results.json").read_bytes()
    real_write = plots.atomic_write_bytes

    def full_disk(path, data):
        if path.endswith("loss.png"):
            raise OSError(errno.ENOSPC, "No space left on device", path)
        real_write(path, data)

    monkeypatch.setattr(plots, "atomic_write_bytes", full_disk)
    assert cli.main(["report", str(tmp_path)]) == cli.EXIT_REPORT_INCOMPLETE
    markdown = (tmp_path / "report.md").read_text()
    assert "## Plots not drawn\n\n- loss.png: could not be written: No space left on device" in (
        markdown
    )
    assert "loss.png" not in embedded_images(markdown)
    assert not (tmp_path / "loss.png").exists() and (tmp_path / "memory.png").exists()
    assert (tmp_path / "results.json").read_bytes() == saved


def test_seconds_read_as_milliseconds_under_one_second():
    from lora_keras.units import format_seconds

    assert format_seconds(0.0078) == "7.8 ms"  # an H200 step
    assert format_seconds(0.9996) == "999.6 ms"
    assert format_seconds(1.5) == "1.50 s"  # a CPU step, to two decimals
    assert format_seconds(14.26) == "14.26 s"


SAVED_RESULTS = os.path.join(os.path.dirname(__file__), "data", "results_0_1_0", "results.json")


def _nested_removals():
    """`(run index, field, nested key or None)` for every field a run written by 0.1.0 holds."""
    with open(SAVED_RESULTS) as file:
        runs = json.load(file)["runs"]
    for index, run in enumerate(runs):
        for field, value in run.items():
            yield index, field, None
            for key in value if isinstance(value, dict) else ():
                yield index, field, key


def test_a_results_json_written_by_0_1_0_draws_a_report(tmp_path):
    with open(SAVED_RESULTS) as file:
        write(tmp_path, json.load(file))
    write_report(tmp_path)
    assert "mixlora r=8" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize(("index", "field", "key"), list(_nested_removals()))
def test_any_field_removed_by_hand_is_drawn_without_it_or_named(
    tmp_path, monkeypatch, index, field, key
):
    # Every figure is still built from the results; only its PNG encoding, the slow part, is
    # skipped.
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda *args, **kwargs: None)
    with open(SAVED_RESULTS) as file:
        data = json.load(file)
    if key is None:
        del data["runs"][index][field]
    else:
        del data["runs"][index][field][key]
    write(tmp_path, data)
    try:
        write_report(tmp_path)
    except ValueError as error:  # never a KeyError or TypeError traceback
        assert "results.json" in str(error) and f"runs[{index}]" in str(error)
        assert not (tmp_path / "report.md").exists()


def test_every_report_names_the_cpu_and_its_instruction_sets(tmp_path):
    from lora_keras.report.markdown import render_markdown

    measured = dict(COMPARE, warnings=["warning: --mixed-precision bfloat16 on this CPU (...)"])
    measured["environment"] = dict(
        ENVIRONMENT, cpu_model="AMD EPYC 7B13", cpu_features=["avx2", "fma"], gpus=[]
    )
    text = render_markdown(measured, [])
    assert (
        "Measured on: CPU AMD EPYC 7B13, 2 cores (AVX2, FMA, no AVX-512, no AVX512_BF16, "
        "no AMX-BF16)." in text
    )
    assert "**warning: --mixed-precision bfloat16 on this CPU (...)**" in text
    on_gpu = dict(measured["environment"], device="GPU: NVIDIA H200 (x1)")
    on_gpu.update(gpu_compute_capability="9.0", cpu_features=["avx2", "avx512f", "amx_bf16"])
    text = render_markdown(dict(measured, environment=on_gpu), [])
    assert (
        "Measured on: GPU: NVIDIA H200 (x1), beside CPU AMD EPYC 7B13, 2 cores (AVX2, AVX-512, "
        "AMX-BF16, no AVX512_BF16), GPU compute capability 9.0." in text
    )
    # A results.json of 0.1.0 did not record them: the report says so.
    assert "Measured on: CPU (x86_64, 2 cores); the CPU's model and instruction sets were not " in (
        render_markdown(COMPARE, [])
    )
