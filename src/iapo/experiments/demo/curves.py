"""The RL runs' logged training steps (`metrics.csv`, one row per RL step): read, summarised per method for the
report (first / last quarter, `summarise_mechanism`) and plotted as learning curves.

    histories = {"grpo": [read_history(path) for path in grpo_runs], "iapo": [...]}
    summary = training_summary(histories); learning_curves(histories, out / "curves.png")
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from iapo.training.diagnostics import summarise_mechanism  # noqa: E402

CURVES = ("rewards/accuracy/mean", "tools/call_rate", "mechanism/outcome_zero_std", "attribution/divergence")


def read_history(path: Path) -> list[dict[str, float]]:
    """One dict per logged training step of a run's `metrics.csv` (empty cells left out)."""
    with open(path) as handle:
        return [
            {key: float(value) for key, value in row.items() if value not in ("", None)}
            for row in csv.DictReader(handle)
        ]


def training_summary(histories: dict[str, list[list[dict]]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per method, per metric: the mean over seeds of `summarise_mechanism`'s first-quarter / last-quarter / whole-run
    means (seeds where the metric was never finite are left out)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for method, runs in histories.items():
        summaries = [summarise_mechanism(run) for run in runs]
        keys = sorted({key for summary in summaries for key in summary})
        out[method] = {}
        for key in keys:
            parts = {}
            for part in ("first", "last", "mean"):
                values = [s[key][part] for s in summaries if key in s and math.isfinite(s[key][part])]
                parts[part] = sum(values) / len(values) if values else math.nan
            out[method][key] = parts
    return out


def learning_curves(histories: dict[str, list[list[dict]]], path: Path) -> None:
    """Per-step `CURVES`, mean ± std over seeds, for each method."""
    figure, axes = plt.subplots(1, len(CURVES), figsize=(4 * len(CURVES), 3.4))
    colours = {"grpo": "tab:blue", "iapo": "tab:orange"}
    for method, runs in histories.items():
        for ax, metric in zip(axes, CURVES, strict=True):
            series = [[row[metric] for row in run if metric in row and math.isfinite(row[metric])] for run in runs]
            length = min((len(s) for s in series), default=0)
            if not length:
                continue
            curves = np.array([s[:length] for s in series])
            mean, std = curves.mean(0), curves.std(0)
            steps = np.arange(1, length + 1)
            ax.plot(steps, mean, label=method.upper(), color=colours[method])
            ax.fill_between(steps, mean - std, mean + std, alpha=0.2, color=colours[method])
    for ax, metric in zip(axes, CURVES, strict=True):
        ax.set_xlabel("RL step")
        ax.set_title(metric, fontsize=9)
    axes[0].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
