"""MixLoRA in the report: the share of routed tokens each expert got, layer by layer."""

import numpy as np
from matplotlib.figure import Figure

from lora_keras.report.results import measured_runs, run_label


def expert_loads_figure(results, title):
    """One heat map a MixLoRA run (layers down, experts across); None without MixLoRA runs."""
    runs = measured_runs(results["runs"], "expert_loads")
    if not runs:
        return None
    figure = Figure(figsize=(6.4 * len(runs), 4.8), layout="constrained")
    for axes, run in zip(np.atleast_1d(figure.subplots(1, len(runs))), runs, strict=True):
        layers = list(run["expert_loads"])
        loads = np.array([run["expert_loads"][layer] for layer in layers])  # (layers, experts)
        image = axes.imshow(loads, aspect="auto", cmap="viridis", vmin=0.0)
        axes.set_xticks(np.arange(loads.shape[1]))
        axes.set_yticks(np.arange(len(layers)), [layer.split("/")[0] for layer in layers])
        axes.set_xlabel("expert")
        axes.set_title(f"{run_label(run)}: even would be {1 / loads.shape[1]:.3f}")
        figure.colorbar(image, ax=axes, label="fraction of routed (token, slot) choices")
    figure.suptitle(title)
    return figure


def mixlora_section(runs):
    """The report's MixLoRA section: each run's settings and its least and most loaded experts."""
    runs = measured_runs(runs, "expert_loads")
    if not runs:
        return None
    rows = ["| run | settings | layer | least loaded | most loaded |", "|---|---|---|---|---|"]
    for run in runs:
        settings = ", ".join(f"{key} {value}" for key, value in run["mixlora"].items())
        for layer, loads in run["expert_loads"].items():
            rows.append(
                f"| {run_label(run)} | {settings} | {layer.split('/')[0]} | "
                f"{min(loads):.3f} | {max(loads):.3f} |"
            )
    note = (
        "Shares of the routed (token, slot) choices over non-padding training tokens; even would "
        "be 1 / num_experts. The training loss of a MixLoRA run includes its load-balance term."
    )
    return "## MixLoRA expert loads\n\n" + "\n".join(rows) + "\n\n" + note
