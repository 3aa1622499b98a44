"""What the demo's report and findings share: row labels, the diagnostics reported, and how numbers are printed.

percent(0.125) == "12.5"; shown("attribution/divergence", 9.45e-3) == "9.45e-03"
"""

from __future__ import annotations

import math

from iapo.experiments.demo.stats import mean_std

STUDENT, TEACHER = "student (cold start)", "teacher (cold start, trained longer)"
GRPO, IAPO = "GRPO (from the cold-started student)", "IAPO (from the cold-started student)"
"""Row labels of the report."""

METHODS = {"grpo": GRPO, "iapo": IAPO}

DIAGNOSTICS = (
    ("rewards/accuracy/mean", "sampled accuracy (outcome reward)"),
    ("mechanism/outcome_zero_std", "groups with equal outcome rewards (no GRPO signal)"),
    ("mechanism/rescued_groups", "groups with equal outcomes whose total rewards differ (format or attribution term)"),
    ("mechanism/rank_corr_attribution_outcome", "within-group rank correlation, attribution term vs outcome"),
    ("attribution/divergence", "student–teacher divergence of the attribution distributions"),
    ("tools/call_rate", "tool-call rate (share of trajectories)"),
    ("tools/failure_frequency", "tool failures per call"),
)
"""The mechanism diagnostics summarised in every report (metric key, wording); the attribution mass of every block /
component is added from what was logged."""

TRAINING_ONLY = (
    ("kl", "policy KL to its reference (the cold start)"),
    ("auxiliary_loss", "attribution loss λ_a · D (each update's calls, before the update)"),
)
"""Diagnostics a run logs over training and the cold start does not have (a row of the training table when some
method logged it)."""

SCIENTIFIC = {"kl", "auxiliary_loss"}
"""Keys printed in scientific notation besides the divergences."""


def percent(value: float | None, digits: int = 1) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{100 * value:.{digits}f}"


def number(value: float | None, digits: int = 3) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def signed(value: float | None, digits: int = 4) -> str:
    """A change with its sign ("–" when unknown)."""
    return "–" if value is None or not math.isfinite(value) else f"{value:+.{digits}f}"


def signed_interval(change: dict) -> str:
    """A paired change with its 95% interval: "-0.5900 [-0.6900, -0.4900]"."""
    return f"{signed(change['mean'])} [{signed(change['low'])}, {signed(change['high'])}]"


def shown(key: str, value: float | None) -> str:
    """A diagnostic as the report prints it: a correlation with 2 decimals, a divergence in scientific notation
    (KL of block masses is often ~1e-4), anything else (shares, rates) in percent."""
    if value is None or not math.isfinite(value):
        return "–"
    if "rank_corr" in key:
        return f"{value:.2f}"
    if "divergence" in key or key in SCIENTIFIC:
        return f"{value:.2e}"
    return percent(value)


def percent_mean_std(values: list[float]) -> str:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return "–"
    mean, std = mean_std(finite)
    return percent(mean) if len(finite) == 1 else f"{percent(mean)} ± {percent(std)}"


def accuracy_of(rows: list[dict], model: str, tools: bool) -> list[float]:
    for row in rows:
        if row["model"] == model and row["tools"] == tools:
            return [r["accuracy"] for r in row["results"]]
    raise KeyError(f"no row {model!r} tools={tools}")


def chosen_candidate(regime: dict) -> dict:
    return next(row for row in regime["candidates"] if row["name"] == regime["chosen"])


def points(result: dict) -> str:
    """A mean difference with its interval, in points of accuracy."""
    return f"{100 * result['mean']:+.1f} [{100 * result['low']:+.1f}, {100 * result['high']:+.1f}]"
