"""The command line: help without TensorFlow, every bad argument refused up front, exit codes."""

import importlib
import json
import os
import re
import subprocess
import sys

import pytest

import lora_keras as lk
from lora_keras import cli
from lora_keras.experiments.train_one import MODES
from lora_keras.targets import TARGETS

TINY = ["--preset", "gpt2_tiny", "--weights", "random", "--steps", "2", "--batch-size", "2"]


@pytest.mark.parametrize("argv", [["--help"], ["compare", "--help"], ["--version"]])
def test_help_and_version_start_no_tensorflow(argv):
    code = (
        "import sys\n"
        "from lora_keras import cli\n"
        "try:\n"
        f"    cli.main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'keras_hub', 'jax', 'torch')\n"
        "         if m in sys.modules]\n"
        "print('RESULT', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # No runtime imported is what makes --help answer at once; a time limit would be flaky.
    assert out.stdout.rsplit("RESULT ", 1)[1].strip() == "[]"
    assert "tensorflow" not in out.stderr.lower()


def test_the_package_imports_lazily_and_keeps_every_public_name():
    code = "import sys, lora_keras; print('keras' in sys.modules or 'tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert set(lk.__all__) <= set(dir(lk))
    assert sorted(lk.__all__) == sorted(lk._EXPORTS), "every export is in __all__, once"
    for name in lk.__all__:
        assert getattr(lk, name) is not None, name
    assert lk.load_gpt2.__name__ == "load_gpt2" and callable(lk.compare)
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        lk.no_such_name  # noqa: B018


def test_the_surgery_and_the_keras_free_target_list_agree():
    from lora_keras.gpt2_surgery import TARGET_ATTRIBUTES

    assert tuple(TARGET_ATTRIBUTES) == TARGETS


def test_help_describes_every_flag_with_its_default_and_the_exit_codes(capsys):
    for command in ("compare", "sweep", "report"):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        text = capsys.readouterr().out
        assert "exit status:" in text and "130  interrupted" in text and "2    bad input" in text
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    for command, subparser in subparsers.items():
        assert subparser.description, command
        for action in subparser._actions:
            assert action.help, f"{command} {action.option_strings}"
    with pytest.raises(SystemExit):
        cli.main(["compare", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"among: {', '.join(MODES)} (default: full,lora)" in text
    assert f"among: {', '.join(TARGETS)} (default: query,value)" in text
    assert "comma-separated training modes" in text and "(default: 10)" in text
    with pytest.raises(SystemExit):
        cli.main(["sweep", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "comma-separated LoRA ranks, each once (default: 1,2,4,8,16,64)" in text


BAD_ARGUMENTS = [
    (["--rank", "0"], {"rank": 0}, "rank (--rank) must be at least 1, got 0"),
    (
        ["--rank", "100000"],
        {"rank": 100000},
        "rank (--rank) must be at most 128 (the smallest size of the query, value projections "
        "of gpt2_tiny), got 100000",
    ),
    ([], {"rank": True}, "rank (--rank) must be an integer, got True"),
    (["--batch-size", "0"], {"batch_size": 0}, "batch_size (--batch-size) must be at least 1"),
    (
        ["--sequence-length", "0"],
        {"sequence_length": 0},
        "sequence_length (--sequence-length) must be at least 1, got 0",
    ),
    (
        ["--sequence-length", "5000"],
        {"sequence_length": 5000},
        "must be at most 512 (gpt2_tiny has position embeddings for 512 tokens), got 5000",
    ),
    (
        ["--steps", "100000"],
        {"steps": 100000},
        "steps (--steps) 100000 at batch_size (--batch-size) 2 needs 200,000 documents",
    ),
    (["--steps", "1"], {"steps": 1}, "steps (--steps) must be at least 2, got 1"),
    (
        ["--weights", "pretrained"],
        {"weights": "pretrained"},
        "'gpt2_tiny' is this package's own architecture and has no pretrained weights",
    ),
    (["--alpha", "-1"], {"alpha": -1.0}, "alpha (--alpha) must be a finite number above 0"),
    (["--alpha", "inf"], {"alpha": float("inf")}, "alpha (--alpha) must be a finite number"),
    (["--timeout", "-1"], {"timeout_s": -1}, "timeout_s (--timeout) must be a finite number"),
    (
        ["--learning-rate", "nan"],
        {"learning_rate": float("nan")},
        "learning_rate (--learning-rate) must be a finite number above 0, got nan",
    ),
    (["--learning-rate", "0"], {"learning_rate": 0.0}, "learning_rate (--learning-rate) must"),
    (
        ["--sample-length", "0"],
        {"sample_length": 0},
        "sample_length (--sample-length) must be at least 1, got 0",
    ),
    (["--modes", "full,full"], {"modes": ("full", "full")}, "modes (--modes) repeats full"),
    (["--modes", "lora,dora9"], {"modes": ("lora", "dora9")}, "Unknown mode(s) ['dora9']"),
    (["--preset", "gpt2_bsae"], {"preset": "gpt2_bsae"}, "Unknown preset (--preset) 'gpt2_bsae'"),
    (
        ["--seed", "4294967296"],
        {"seed": 2**32},
        "seed (--seed) must be at most 4294967295 (Keras seeds NumPy, whose seeds are 32-bit)",
    ),
    (["--seed", "-1"], {"seed": -1}, "seed (--seed) must be at least 0, got -1"),
    # Refused even where no mode trains at it.
    (["--rank", "0", "--modes", "full"], {"rank": 0, "modes": ("full",)}, "rank (--rank) must"),
    (["--rank", "-2", "--modes", "mixlora"], {"rank": -2, "modes": ("mixlora",)}, "at least 1"),
    (
        ["--modes", ""],
        {"modes": ()},
        "modes (--modes) names no mode: give at least one, comma-separated, among: full, lora",
    ),
    (
        ["--targets", "query,vaule"],
        {"targets": ("query", "vaule")},
        "targets (--targets): Unknown LoRA target(s) ['vaule']. Valid targets: query",
    ),
    (
        ["--data", "missing.txt"],
        {"data": "missing.txt"},
        "data (--data): No such file or folder: 'missing.txt'",
    ),
]


def _tiny_compare(tmp_path, **changes):
    arguments = dict(preset="gpt2_tiny", weights="random", steps=2, batch_size=2)
    lk.compare(**dict(arguments, out=str(tmp_path / "out"), **changes))


@pytest.mark.parametrize("flags, kwargs, message", BAD_ARGUMENTS)
def test_bad_arguments_are_refused_at_once_naming_the_flag(
    tmp_path, capsys, monkeypatch, flags, kwargs, message
):
    monkeypatch.chdir(tmp_path)
    # Refused before any process starts or model is built: that is what makes it quick.
    monkeypatch.setattr(
        importlib.import_module("lora_keras.experiments.runner"),
        "run_isolated",
        lambda *args, **kwargs: pytest.fail("a run started for a bad argument"),
    )
    if kwargs != {"rank": True}:  # argparse refuses a non-integer --rank itself
        assert cli.main(["compare", *TINY, *flags]) == cli.EXIT_BAD_INPUT
        assert message in capsys.readouterr().err
    with pytest.raises((ValueError, FileNotFoundError)) as error:
        _tiny_compare(tmp_path, **kwargs)
    assert message in str(error.value)
    assert os.listdir(tmp_path) == [], "no folder is left behind by a refused comparison"


def test_sweep_refuses_repeated_and_non_integer_ranks(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["sweep", *TINY, "--ranks", "4,4"]) == cli.EXIT_BAD_INPUT
    assert "ranks (--ranks) repeats 4: each run needs its own name" in capsys.readouterr().err
    with pytest.raises(ValueError, match="ranks \\(--ranks\\) must be an integer, got True"):
        lk.sweep(ranks=(True, 4), preset="gpt2_tiny", weights="random")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "content, message",
    [
        (b"text\x00\xff\xfe binary", "Cannot read {path}: it is not UTF-8 text"),
        (b'{"body": "x"}\n', "no 'text' field; its fields are ['body']. Name the text's field"),
    ],
)
def test_bad_data_is_refused_naming_the_file_and_leaves_no_folder(
    tmp_path, capsys, monkeypatch, content, message
):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / ("data.jsonl" if content.startswith(b"{") else "data.txt")
    path.write_bytes(content)
    message = message.format(path=path)
    assert cli.main(["compare", *TINY, "--data", str(path)]) == cli.EXIT_BAD_INPUT
    assert message in capsys.readouterr().err
    with pytest.raises(ValueError) as error:
        _tiny_compare(tmp_path, data=str(path))
    assert message in str(error.value)
    assert sorted(os.listdir(tmp_path)) == [path.name]


def test_text_field_names_the_jsonl_field(tmp_path, monkeypatch):
    from lora_keras.experiments.checks import check_data

    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps({"body": f"story {i}"}) + "\n" for i in range(5)))
    assert check_data(str(path), "body", steps=2, batch_size=2) == 5
    args = cli.build_parser().parse_args(["compare", "--data", str(path), "--text-field", "body"])
    assert cli._run_arguments(args)["text_field"] == "body"


def test_offline_reddit_tifu_is_bad_input(tmp_path, capsys, monkeypatch):
    load_texts_module = importlib.import_module("lora_keras.data.load_texts")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(load_texts_module, "host_reachable", lambda address: False)
    monkeypatch.setattr(
        "tensorflow_datasets.builder",
        lambda name: type("Builder", (), {"is_prepared": lambda self: False})(),
    )
    assert cli.main(["compare", *TINY, "--data", "reddit_tifu"]) == cli.EXIT_BAD_INPUT
    assert "reddit_tifu: it is not downloaded yet" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_reddit_tifu_without_tensorflow_datasets_is_bad_input(tmp_path, capsys, monkeypatch):
    optional = importlib.import_module("lora_keras.data.optional_tensorflow")
    monkeypatch.chdir(tmp_path)
    found = optional.importlib.util.find_spec
    monkeypatch.setattr(
        optional.importlib.util,
        "find_spec",
        lambda name, *args: None if name == "tensorflow_datasets" else found(name, *args),
    )
    assert cli.main(["compare", *TINY, "--data", "reddit_tifu"]) == cli.EXIT_BAD_INPUT
    error = capsys.readouterr().err
    assert "lora-keras: error: TFDS reddit_tifu needs tensorflow_datasets" in error
    assert "pip install tensorflow-datasets" in error and "Traceback" not in error
    assert os.listdir(tmp_path) == []


def test_offline_pretrained_weights_are_bad_input(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("lora_keras.models.pretrained_reachable", lambda: False)
    argv = ["compare", "--preset", "gpt2_base_en", "--weights", "pretrained"]
    assert cli.main(argv) == cli.EXIT_BAD_INPUT
    assert "this machine looks offline. Use weights='random'" in capsys.readouterr().err


@pytest.mark.parametrize("why", ["under a file", "read-only"])
def test_an_unwritable_out_is_bad_input(tmp_path, capsys, monkeypatch, why):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    out = blocker / "out" if why == "under a file" else tmp_path / "out"
    if why == "read-only":
        # Tests may run as root, whom file modes do not stop: the refusal is simulated.
        def refuse(path, *args):
            raise PermissionError(13, "Permission denied", path)

        monkeypatch.setattr(os, "mkdir", refuse)
    assert cli.main(["compare", *TINY, "--out", str(out)]) == cli.EXIT_BAD_INPUT
    error = capsys.readouterr().err
    assert f"Cannot create the results folder '{out}'" in error
    assert "Choose a writable place with --out" in error


def test_an_existing_out_is_refused_even_empty(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    assert cli.main(["compare", *TINY, "--out", str(tmp_path / "out")]) == cli.EXIT_BAD_INPUT
    assert "already exists. Choose a new --out folder" in capsys.readouterr().err


def test_ctrl_c_before_any_run_is_an_interruption_not_a_traceback(capsys, monkeypatch):
    def interrupt(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_run", interrupt)
    assert cli.main(["compare", *TINY]) == cli.EXIT_INTERRUPTED
    assert "interrupted by SIGINT before any run started" in capsys.readouterr().err


def preset_folder(folder, config=None, omit=(), class_name="GPT2Backbone", text=None):
    """A folder laid out as `save_to_preset` writes one (files' contents faked), `omit` left out."""
    from lora_keras.experiments.checks import PRESET_FILES, PRESET_WEIGHTS_FILE
    from lora_keras.models import GPT2_ARCHITECTURES

    config = dict(GPT2_ARCHITECTURES["gpt2_tiny"]) if config is None else config
    for name in (*PRESET_FILES, PRESET_WEIGHTS_FILE):
        if name not in omit:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text("{}")
    if "config.json" not in omit:
        saved = json.dumps({"class_name": class_name, "config": config})
        (folder / "config.json").write_text(saved if text is None else text)
    return folder


def _without(field):
    from lora_keras.models import GPT2_ARCHITECTURES

    return {k: v for k, v in GPT2_ARCHITECTURES["gpt2_tiny"].items() if k != field}


@pytest.mark.parametrize(
    "layout, weights, message",
    [
        (
            {
                "omit": (
                    "config.json",
                    "tokenizer.json",
                    "assets/tokenizer/vocabulary.json",
                    "assets/tokenizer/merges.txt",
                    "model.weights.h5",
                )
            },
            "random",
            "is not a GPT-2 preset folder: it lacks config.json, tokenizer.json, "
            "assets/tokenizer/vocabulary.json, assets/tokenizer/merges.txt. Give a folder written "
            "by `lm.save_to_preset(folder)`",
        ),
        (
            {"config": _without("max_sequence_length")},
            "random",
            "its config.json's config lacks max_sequence_length",
        ),
        (
            {"config": dict(_without("num_heads"), num_heads="4")},
            "random",
            "its config.json's config has num_heads='4', not a positive integer",
        ),
        ({"text": "{not json"}, "random", "its config.json is not valid JSON"),
        (
            {"class_name": "BertBackbone"},
            "random",
            "its config.json describes a 'BertBackbone', not a GPT2Backbone",
        ),
        (
            {"omit": ("model.weights.h5",)},
            "pretrained",
            "it lacks model.weights.h5 (weights='random', --weights random, needs no weights file)",
        ),
    ],
)
def test_a_bad_preset_folder_is_refused_before_anything_is_made(
    tmp_path, capsys, monkeypatch, layout, weights, message
):
    folder = tmp_path / "preset"
    folder.mkdir()
    preset_folder(folder, **layout)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    argv = ["compare", "--preset", str(folder), "--weights", weights, "--steps", "2"]
    assert cli.main(argv) == cli.EXIT_BAD_INPUT
    assert message in capsys.readouterr().err
    with pytest.raises(ValueError, match=re.escape(message)):
        lk.RunSpec(preset=str(folder), weights=weights)
    assert os.listdir(work) == []


def test_a_complete_preset_folder_passes_the_checks(tmp_path):
    folder = preset_folder(tmp_path)
    spec = lk.RunSpec(preset=str(folder), weights=None, sequence_length=512)
    assert spec.preset == str(folder)
    preset_folder(tmp_path, omit=())  # no weights needed for random ones:
    (tmp_path / "model.weights.h5").unlink()
    lk.RunSpec(preset=str(folder), weights="random")


# Refusals that need no runtime: each answers before TensorFlow is imported.
FAST_REFUSALS = [
    (["compare", *TINY, "--out", "{existing}"], "already exists. Choose a new --out folder"),
    (["compare", *TINY, "--out", "{file}"], "a file of that name exists. Choose a new --out"),
    (["report", "{existing}"], "results.json not found: run `lora-keras compare`"),
    (["report", "{missing}"], "results.json not found"),
    (["report", "{truncated}"], "results.json is not valid JSON"),
]


@pytest.mark.parametrize("argv, message", FAST_REFUSALS)
def test_refusals_answer_before_tensorflow_starts(tmp_path, argv, message):
    (tmp_path / "existing").mkdir()
    (tmp_path / "file").write_text("")
    (tmp_path / "truncated").mkdir()
    (tmp_path / "truncated" / "results.json").write_text('{"schema_version": 1, "runs": [')
    paths = {name: str(tmp_path / name) for name in ("existing", "file", "missing", "truncated")}
    argv = [argument.format(**paths) for argument in argv]
    code = (
        "import sys\n"
        "from lora_keras import cli\n"
        f"code = cli.main({argv!r})\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'keras_hub') if m in sys.modules]\n"
        "print('RESULT', code, heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.rsplit("RESULT ", 1)[1].strip() == f"{cli.EXIT_BAD_INPUT} []", out.stderr
    assert message in out.stderr


def test_a_report_whose_runs_all_failed_exits_1(tmp_path, capsys):
    runs = [
        {"mode": "lora", "rank": 2, "status": "failed", "error": "ValueError: bad"},
        {"mode": "full", "status": "oom", "error": "ResourceExhaustedError"},
    ]
    results = {"schema_version": 1, "environment": {}, "config": {}, "runs": runs}
    (tmp_path / "results.json").write_text(json.dumps(results))
    assert cli.main(["report", str(tmp_path)]) == cli.EXIT_RUN_FAILED
    assert "lora-keras: 2 of 2 runs failed: lora r=2 (failed), full (oom)" in (
        capsys.readouterr().err
    )
    assert (tmp_path / "report.md").exists()
