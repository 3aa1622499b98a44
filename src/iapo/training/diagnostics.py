"""Mechanism diagnostics of IAPO: does the attribution term add a training signal, and what does it reward?

Pure functions on a training step's tensors and trajectories, all with groups of `group_size` consecutive
trajectories (prompt-major order, as `rollout` returns them):

- `within_group_spearman`: the Spearman rank correlation of two reward columns within each group (average ranks for
  ties), averaged over the groups where neither column is constant: is the attribution term another view of the
  outcome (ρ near 1), independent of it (near 0), or at odds with it (negative)?
- `signal_shares`: the share of groups where GRPO has no signal (all outcome rewards equal) and the share of groups
  where it has none but the total reward still differs (the groups that IAPO's term gives a gradient to);
- `mass_per_component`: the mean weight of each component (block / region) over a batch of attribution dicts;
- `mean_divergence`: the mean student–teacher divergence over the attributed trajectories;
- `tool_metrics`: tool use under TRL's names (calls per trajectory, failures per call, calls per trajectory of each
  tool) and the share of trajectories with at least one call;
- `mechanism_metrics`: all of them for one step, as flat metric names to log; `summarise_mechanism`: a run's logged
  steps summarised for a report (mean over the run, over its first and its last quarter of steps).

Run the checks with `python -m pytest tests/test_diagnostics.py -q`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import torch
from torch import Tensor

from iapo.agent.trajectory import Trajectory
from iapo.attribution.align import DEFAULT_KL_SMOOTHING, attribution_divergence

SPREAD_ATOL = 1e-6
"""Rewards of a group whose max − min is at most this count as equal (float noise is not a training signal)."""


def _groups(values: Tensor, group_size: int) -> Tensor:
    values = torch.as_tensor(values, dtype=torch.float64).flatten()
    if group_size < 1 or values.numel() % group_size:
        raise ValueError(f"{values.numel()} values do not split into groups of {group_size}")
    return values.view(-1, group_size)


def average_ranks(values: Tensor) -> Tensor:
    """Ranks 1..n of the last dim, ties getting the mean of the ranks they span ([1, 3, 3] -> [1, 2.5, 2.5])."""
    less = (values[..., None, :] < values[..., :, None]).sum(-1)
    equal = (values[..., None, :] == values[..., :, None]).sum(-1)
    return less + (equal + 1) / 2


def within_group_spearman(
    first: Tensor, second: Tensor, group_size: int, atol: float = SPREAD_ATOL
) -> tuple[float, int]:
    """(mean within-group Spearman ρ of two columns [N], number of groups it averages); (nan, 0) when every group
    has a constant column (spread <= `atol`)."""
    a, b = _groups(first, group_size), _groups(second, group_size)
    if a.shape != b.shape:
        raise ValueError(f"columns of {a.numel()} and {b.numel()} values")
    varying = (_spread(a) > atol) & (_spread(b) > atol)
    if not varying.any():
        return math.nan, 0
    ra, rb = average_ranks(a[varying]), average_ranks(b[varying])
    ra, rb = ra - ra.mean(-1, keepdim=True), rb - rb.mean(-1, keepdim=True)
    rho = (ra * rb).sum(-1) / ((ra * ra).sum(-1) * (rb * rb).sum(-1)).sqrt()
    return float(rho.mean()), int(varying.sum())


def signal_shares(outcome: Tensor, total: Tensor, group_size: int, atol: float = SPREAD_ATOL) -> dict[str, float]:
    """Shares of all groups: `outcome_zero_std` (equal outcome rewards: no GRPO signal) and `rescued` (equal outcome
    rewards, yet total rewards that differ)."""
    flat_outcome, flat_total = _groups(outcome, group_size), _groups(total, group_size)
    if flat_outcome.shape != flat_total.shape:
        raise ValueError(f"columns of {flat_outcome.numel()} and {flat_total.numel()} values")
    no_signal = _spread(flat_outcome) <= atol
    rescued = no_signal & (_spread(flat_total) > atol)
    return {"outcome_zero_std": float(no_signal.double().mean()), "rescued": float(rescued.double().mean())}


def _spread(grouped: Tensor) -> Tensor:
    return grouped.max(-1).values - grouped.min(-1).values


def mass_per_component(distributions: Sequence[dict[str, float]]) -> dict[str, float]:
    """Mean weight of each component over the non-empty distributions (a key absent from one weighs 0 there);
    `{}` when every distribution is empty (no trajectory had a target)."""
    present = [d for d in distributions if d]
    keys = sorted(set().union(*present)) if present else []
    return {key: sum(d.get(key, 0.0) for d in present) / len(present) for key in keys}


def mean_divergence(
    student: Sequence[dict[str, float]],
    teacher: Sequence[dict[str, float]],
    divergence: str,
    kl_smoothing: float = DEFAULT_KL_SMOOTHING,
) -> float:
    """Mean D(student ‖ teacher) over the trajectories with both attributions; nan when there is none."""
    values = [
        attribution_divergence(s, t, divergence, kl_smoothing) for s, t in zip(student, teacher, strict=True) if s and t
    ]
    return sum(values) / len(values) if values else math.nan


def tool_metrics(trajectories: Sequence[Trajectory]) -> dict[str, float]:
    """`tools/call_frequency`: tool calls per trajectory; `tools/failure_frequency`: failed calls per call
    (`ToolStats.failures`: unparsable calls, unknown tools, the tools' own errors), nan without calls;
    `tools/<tool>/call_frequency`: that tool's calls per trajectory; `tools/call_rate`: the share of trajectories
    with at least one call (a trajectory that calls twice counts once, unlike `call_frequency`)."""
    if not trajectories:
        raise ValueError("no trajectories")
    n = len(trajectories)
    calls = sum(t.stats.calls for t in trajectories)
    failures = sum(t.stats.failures for t in trajectories)
    metrics = {
        "tools/call_frequency": calls / n,
        "tools/failure_frequency": failures / calls if calls else math.nan,
        "tools/call_rate": sum(t.stats.calls > 0 for t in trajectories) / n,
    }
    by_tool = Counter()
    for t in trajectories:
        by_tool.update(t.stats.calls_by_tool)
    metrics |= {f"tools/{name}/call_frequency": count / n for name, count in sorted(by_tool.items())}
    return metrics


def mechanism_metrics(
    *,
    outcome: Tensor,
    total: Tensor,
    attribution_term: Tensor | None,
    student: Sequence[dict[str, float]] | None,
    teacher: Sequence[dict[str, float]] | None,
    trajectories: Sequence[Trajectory],
    group_size: int,
    divergence: str = "kl",
    kl_smoothing: float = DEFAULT_KL_SMOOTHING,
) -> dict[str, float]:
    """One step's diagnostics as metric names: `mechanism/*`, `attribution/*` (when attributions were computed:
    `attribution_term`, `student`, `teacher` not None) and `tools/*`.

    Args:
        outcome: [N] the outcome (accuracy) reward.
        total: [N] the total reward that the advantages are computed from.
        attribution_term: [N] the attribution term as it enters the reward (before λ), or None (GRPO).
        student, teacher: per trajectory {component: weight}, `{}` without a target; or None.
        trajectories: the N trajectories (tool statistics).
        group_size: G.
        divergence, kl_smoothing: how `attribution/divergence` is measured.
    """
    metrics: dict[str, float] = {}
    shares = signal_shares(outcome, total, group_size)
    metrics["mechanism/outcome_zero_std"] = shares["outcome_zero_std"]
    metrics["mechanism/rescued_groups"] = shares["rescued"]
    metrics |= tool_metrics(trajectories)
    if attribution_term is None or student is None or teacher is None:
        return metrics
    rho, groups = within_group_spearman(attribution_term, outcome, group_size)
    metrics["mechanism/rank_corr_attribution_outcome"] = rho
    metrics["mechanism/rank_corr_groups"] = float(groups)
    metrics["attribution/divergence"] = mean_divergence(student, teacher, divergence, kl_smoothing)
    metrics["attribution/unattributed"] = float(sum(not (s and t) for s, t in zip(student, teacher, strict=True)))
    for side, distributions in (("student", student), ("teacher", teacher)):
        for key, mass in mass_per_component(distributions).items():
            metrics[f"attribution/{side}_mass/{key}"] = mass
    return metrics


def summarise_mechanism(history: Sequence[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per metric logged by `mechanism_metrics` over a run's steps: `mean` over all steps, `first` and `last` (means
    over the first and the last quarter of those steps, at least one step each) and `steps` (the steps with a finite
    value: nan values, e.g. no tool call in a step, are left out; a metric never finite gets nan)."""
    keys = sorted({key for row in history for key in row})
    summary = {}
    for key in keys:
        values = [row[key] for row in history if key in row and math.isfinite(row[key])]
        quarter = max(1, len(values) // 4)
        summary[key] = {
            "mean": sum(values) / len(values) if values else math.nan,
            "first": sum(values[:quarter]) / quarter if values else math.nan,
            "last": sum(values[-quarter:]) / quarter if values else math.nan,
            "steps": float(len(values)),
        }
    return summary
