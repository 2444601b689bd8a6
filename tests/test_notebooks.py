"""The notebooks: each `.ipynb` matches its jupytext `.py`, and each runs top to bottom.

The `.py` (jupytext percent format) is the source of truth; the `.ipynb` beside it is generated
with `jupytext --update --to ipynb notebooks/NAME.py` (`--update` keeps the cell ids) and stored
without outputs. Execution uses the tiny settings of the workshop issue (`gpt2_tiny`, random
weights, 2 batches), added to the cell tagged `parameters` as papermill would, in a kernel that
runs this very Python (`sys.executable`).
"""

import json
import sys
import time
from pathlib import Path

import jupytext
import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
SOURCES = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))
TINY_SETTINGS = {"PRESET": "gpt2_tiny", "WEIGHTS": "random", "NUM_BATCHES": 2}
CELL_TIMEOUT_S = 900


def _cells(notebook):
    return [(cell.cell_type, cell.source, cell.metadata.get("tags", [])) for cell in notebook.cells]


def test_there_are_notebooks():
    names = [source.stem for source in SOURCES]
    for name in (
        "01_lora_gpt2_walkthrough",
        "02_memory_time_report",
        "03_qlora_and_dora",
        "04_mixlora",
        "05_learn_and_forget",
        "06_many_adapters",
    ):
        assert name in names, names


@pytest.mark.parametrize("source", SOURCES, ids=lambda path: path.stem)
def test_ipynb_is_generated_from_its_py(source):
    ipynb = source.with_suffix(".ipynb")
    fix = f"regenerate it: jupytext --update --to ipynb {source.relative_to(NOTEBOOKS.parent)}"
    assert ipynb.exists(), f"{ipynb.name} is missing: {fix}"
    stored = nbformat.read(ipynb, as_version=4)
    assert _cells(stored) == _cells(jupytext.read(source)), f"{ipynb.name} differs from .py: {fix}"
    assert stored.metadata.get("jupytext", {}).get("formats") == "ipynb,py:percent", fix
    assert stored.metadata["kernelspec"]["name"] == "python3"
    for cell in stored.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, (
                f"{ipynb.name} has stored outputs: {fix}"
            )


@pytest.mark.parametrize("source", SOURCES, ids=lambda path: path.stem)
def test_one_parameters_cell(source):
    notebook = jupytext.read(source)
    tagged = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{source.name}: expected one cell tagged 'parameters'"
    for name in ("PRESET", "WEIGHTS", "DATA", "NUM_BATCHES", "BATCH_SIZE", "RANK", "ALPHA"):
        assert f"\n{name} = " in "\n" + tagged[0].source, f"{source.name}: no {name} setting"
    assert "\nSEQUENCE_LENGTH = " in "\n" + tagged[0].source


SET_UP_CELL_MAX_LINES = 20


@pytest.mark.parametrize("source", SOURCES, ids=lambda path: path.stem)
def test_it_opens_with_its_idea_then_its_settings_then_one_short_set_up_cell(source):
    why, settings, set_up = jupytext.read(source).cells[:3]
    assert why.cell_type == "markdown" and why.source.startswith("# "), "a title first"
    assert "**Why" in why.source, f"{source.name}: the title cell says why, in a few sentences"
    assert "parameters" in settings.metadata.get("tags", []), "the parameters cell second"
    called = "start_notebook(" in set_up.source and "globals()" in set_up.source
    assert called, f"{source.name}: the set-up cell third, calling start_notebook(globals(), ...)"
    lines = [line for line in set_up.source.splitlines() if line.strip()]
    assert len(lines) <= SET_UP_CELL_MAX_LINES, f"{source.name}: the set-up cell is long"
    text = source.read_text()
    assert text.count("start_notebook(") == 1, "one call to the one set-up helper"
    for plumbing in ("notebook_setting", "choose_weights", "pretrained_reachable", "KERAS_BACKEND"):
        assert plumbing not in text, f"{source.name}: {plumbing} belongs in start_notebook"


def with_parameters(notebook, settings):
    """Appends `settings` to the cell tagged `parameters`, as papermill injects them."""
    cell = next(cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", []))
    lines = [f"{name} = {value!r}" for name, value in settings.items()]
    cell.source = cell.source.rstrip("\n") + "\n# Injected by tests/test_notebooks.py\n"
    cell.source += "\n".join(lines) + "\n"
    return notebook


def this_python_kernel(folder):
    """A kernel manager whose kernel is `sys.executable`, whatever kernels Jupyter knows of."""
    from jupyter_client import KernelManager
    from jupyter_client.kernelspec import KernelSpecManager

    spec_folder = folder / "kernels" / "this-python"
    spec_folder.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "tests: this Python",
        "language": "python",
    }
    (spec_folder / "kernel.json").write_text(json.dumps(spec))
    specs = KernelSpecManager(kernel_dirs=[str(folder / "kernels")])
    return KernelManager(kernel_name="this-python", kernel_spec_manager=specs)


@pytest.mark.large
@pytest.mark.parametrize("source", SOURCES, ids=lambda path: path.stem)
def test_notebook_runs_on_tiny_settings(source, tmp_path):
    from nbclient import NotebookClient

    notebook = with_parameters(nbformat.read(source.with_suffix(".ipynb"), 4), TINY_SETTINGS)
    workdir = tmp_path / "run"
    workdir.mkdir()
    client = NotebookClient(
        notebook,
        km=this_python_kernel(tmp_path),
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(workdir)}},
    )
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on any error
    print(f"{source.stem}: executed in {time.perf_counter() - start:.0f} s")
