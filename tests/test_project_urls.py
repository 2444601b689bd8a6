"""One address the project installs from: pyproject's [project.urls] Source, used everywhere."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# pyproject's `[project.urls]` line (a regex: tomllib is not in Python 3.10, which we support).
SOURCE = re.search(r'^Source = "(.+)"$', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebooks_install_from_the_project_source_and_can_be_told_otherwise(notebook):
    text = notebook.read_text()
    assert f'os.environ.get("LORA_KERAS_SOURCE", "git+{SOURCE}")' in text
    repository = SOURCE.removeprefix("https://github.com/")
    badge = f"colab.research.google.com/github/{repository}/blob/main/notebooks/{notebook.stem}"
    assert badge in text


def test_readme_names_the_project_source_and_no_other_repository():
    readme = (ROOT / "README.md").read_text()
    assert f"pip install git+{SOURCE}" in readme
    assert set(re.findall(r"https://github\.com/[\w.-]+/[\w.-]+", readme)) == {SOURCE}
