"""Draw a comparison's report (`report.md` and PNG plots) from its `results.json` alone."""

import os

from lora_keras.io_utils import atomic_write_text
from lora_keras.report.markdown import render_markdown
from lora_keras.report.plots import draw_plots
from lora_keras.report.results import load_results

REPORT_FILE = "report.md"


class ReportIncomplete(OSError):
    """Some plots could not be written (a full disk); report.md says which."""


def write_report(folder):
    """(Re)write `report.md` and the PNG plots in `folder` from `folder/results.json`.

    Nothing is typed by hand: every number, plot and label comes from `results.json`, so a report
    can be redrawn at any time, on any machine, from the results alone. Each file is written
    whole or not at all.

    Args:
        folder: the folder that holds `results.json`, as written by `lora-keras compare`.

    Returns:
        The path of `report.md`.

    Raises:
        ValueError: results.json is missing a field or holds a wrong type (named); nothing
            is written.
        ReportIncomplete: a plot could not be written; report.md was, and says which.

    Example:

    ```python
    write_report("runs/gpt2-lora")  # writes runs/gpt2-lora/report.md and its PNGs
    ```
    """
    results = load_results(folder)
    plots, not_drawn = draw_plots(results, folder)
    path = os.path.join(os.fspath(folder), REPORT_FILE)
    atomic_write_text(path, render_markdown(results, plots, not_drawn))
    if not_drawn:
        raise ReportIncomplete(
            f"{path} was written, but not every plot: "
            + "; ".join(f"{name} {reason}" for name, reason in not_drawn)
            + ". results.json is intact: free some space and run `lora-keras report "
            f"{os.fspath(folder)}` to draw them."
        )
    return path
