"""Mechanism diagnostics on constructed rewards: within-group Spearman ρ (ties, constant groups), the share of groups
without a GRPO signal and of those the attribution term rescues, mass per block, divergence, tool rates, the step's
metric names and a run's summary."""

from __future__ import annotations

import math
from collections import Counter
from types import SimpleNamespace

import pytest
import torch

from iapo.agent.trajectory import ToolStats
from iapo.attribution.align import attribution_divergence
from iapo.training.diagnostics import (
    average_ranks,
    mass_per_component,
    mean_divergence,
    mechanism_metrics,
    signal_shares,
    summarise_mechanism,
    tool_metrics,
    within_group_spearman,
)


def _trajectory(calls: int = 0, **errors: int):
    return SimpleNamespace(stats=ToolStats(calls=calls, errors=Counter(errors)))


def test_average_ranks_share_ties():
    assert average_ranks(torch.tensor([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]
    assert average_ranks(torch.tensor([[5.0, 5.0, 5.0]])).tolist() == [[2.0, 2.0, 2.0]]


def test_within_group_spearman_on_constructed_groups():
    """Groups of 4: equal order (ρ = 1), reversed (−1), ties in the first column (ρ = 4.5 / √22.5 by hand: ranks
    (1.5, 1.5, 3, 4) against (1, 2, 3, 4)), and two skipped groups where a column is constant."""
    first = torch.tensor([1, 2, 3, 4, 1, 2, 3, 4, 1, 1, 2, 3, 7, 7, 7, 7, 1, 2, 3, 4], dtype=torch.float32)
    second = torch.tensor([10, 20, 30, 40, 4, 3, 2, 1, 1, 2, 3, 4, 1, 2, 3, 4, 0, 0, 0, 0], dtype=torch.float32)
    rho, groups = within_group_spearman(first, second, group_size=4)
    tied = 4.5 / math.sqrt(22.5)
    assert groups == 3
    assert rho == pytest.approx((1 - 1 + tied) / 3)
    assert within_group_spearman(first[:4], second[:4], 4) == (pytest.approx(1.0), 1)
    assert within_group_spearman(first[8:12], second[8:12], 4)[0] == pytest.approx(tied)
    nan, none = within_group_spearman(first[12:], second[12:], 4)
    assert math.isnan(nan) and none == 0
    # monotone transforms do not change ranks; float noise below the tolerance counts as constant
    assert within_group_spearman(first[:8].exp(), second[:8] ** 3, 4)[0] == pytest.approx(0.0)
    assert within_group_spearman(torch.tensor([1.0, 1 + 1e-9]), torch.tensor([0.0, 1.0]), 2)[1] == 0
    with pytest.raises(ValueError, match="groups of 3"):
        within_group_spearman(first, second, 3)


def test_signal_shares_count_the_groups_the_attribution_term_rescues():
    """Four groups of 3: outcome all 1 and totals that differ (rescued), outcome all 0 and equal totals (no signal
    at all), a real outcome signal, and totals that differ only by float noise (not rescued)."""
    outcome = torch.tensor([1, 1, 1, 0, 0, 0, 0, 1, 0, 1, 1, 1], dtype=torch.float32)
    total = torch.tensor([0.9, 1.0, 0.95, 0, 0, 0, 0, 1, 0, 1, 1 + 1e-9, 1], dtype=torch.float64)
    assert signal_shares(outcome, total, 3) == {"outcome_zero_std": 0.75, "rescued": 0.25}
    assert signal_shares(outcome[3:9], total[3:9], 3) == {"outcome_zero_std": 0.5, "rescued": 0.0}
    with pytest.raises(ValueError, match="columns"):
        signal_shares(outcome, total[:9], 3)


def test_mass_per_component_and_divergence():
    student = [{"P": 0.5, "I": 0.5}, {}, {"I": 1.0}]
    teacher = [{"P": 0.25, "I": 0.75}, {"I": 1.0}, {}]
    assert mass_per_component(student) == {"I": 0.75, "P": 0.25}
    assert mass_per_component([{}, {}]) == {}
    expected = attribution_divergence(student[0], teacher[0], "kl")
    assert expected > 0
    assert mean_divergence(student, teacher, "kl") == pytest.approx(expected)  # only the pair with both sides
    assert math.isnan(mean_divergence([{}], [{"I": 1.0}], "jsd"))


def test_tool_metrics():
    """Four trajectories: no call; one good call; two calls, one outside the image; one unparsable call (4 calls,
    2 failures). Failures are the registry's failure kinds (a format error such as `text_after_answer` is not one);
    a trajectory calling twice counts twice in `call_frequency` and once in `call_rate`."""
    trajectories = [
        _trajectory(),
        _trajectory(1, text_after_answer=1),
        _trajectory(2, bbox_outside_image=1),
        _trajectory(1, bad_json=1),
    ]
    by_tool = [{}, {"zoom": 1}, {"zoom": 2}, {}]
    for trajectory, calls in zip(trajectories, by_tool, strict=True):
        trajectory.stats.calls_by_tool.update(calls)
    assert tool_metrics(trajectories) == {
        "tools/call_frequency": 1.0,
        "tools/failure_frequency": 0.5,
        "tools/call_rate": 0.75,
        "tools/zoom/call_frequency": 0.75,
    }
    none = tool_metrics([_trajectory()])
    assert none["tools/call_rate"] == 0.0 and math.isnan(none["tools/failure_frequency"])
    with pytest.raises(ValueError, match="no trajectories"):
        tool_metrics([])


def test_mechanism_metrics_of_a_step():
    """Two groups of 2. Group 1: equal outcome, the attribution term breaks the tie (rescued). Group 2: outcome and
    term ranked alike (ρ = 1). Trajectory 1 has no target."""
    outcome = torch.tensor([1.0, 1.0, 0.0, 1.0])
    term = torch.tensor([-0.2, 0.0, -0.5, -0.1])
    total = outcome + 0.5 * term
    student = [{"I": 0.6, "T": 0.4}, {}, {"I": 0.9, "T": 0.1}, {"I": 0.5, "T": 0.5}]
    teacher = [{"I": 0.5, "T": 0.5}, {"I": 1.0}, {"I": 0.5, "T": 0.5}, {"I": 0.5, "T": 0.5}]
    trajectories = [_trajectory(1), _trajectory(), _trajectory(1, unknown_tool=1), _trajectory(2)]
    metrics = mechanism_metrics(
        outcome=outcome,
        total=total,
        attribution_term=term,
        student=student,
        teacher=teacher,
        trajectories=trajectories,
        group_size=2,
        divergence="jsd",
    )
    assert metrics["mechanism/outcome_zero_std"] == 0.5 and metrics["mechanism/rescued_groups"] == 0.5
    assert metrics["mechanism/rank_corr_attribution_outcome"] == pytest.approx(1.0)
    assert metrics["mechanism/rank_corr_groups"] == 1.0
    assert metrics["attribution/unattributed"] == 1.0
    assert metrics["attribution/divergence"] == pytest.approx(mean_divergence(student, teacher, "jsd"))
    assert metrics["attribution/student_mass/I"] == pytest.approx((0.6 + 0.9 + 0.5) / 3)
    assert metrics["attribution/teacher_mass/T"] == pytest.approx((0.5 + 0 + 0.5 + 0.5) / 4)
    assert metrics["tools/call_rate"] == 0.75 and metrics["tools/failure_frequency"] == 0.25
    grpo = mechanism_metrics(
        outcome=outcome,
        total=outcome,
        attribution_term=None,
        student=None,
        teacher=None,
        trajectories=trajectories,
        group_size=2,
    )
    assert grpo == {
        "mechanism/outcome_zero_std": 0.5,
        "mechanism/rescued_groups": 0.0,
        "tools/call_frequency": 1.0,
        "tools/failure_frequency": 0.25,
        "tools/call_rate": 0.75,
    }


def test_summarise_mechanism_over_a_run():
    history = [
        {"tools/call_rate": float(step), "tools/failure_frequency": math.nan if step < 2 else 0.0} for step in range(8)
    ]
    summary = summarise_mechanism(history)
    assert summary["tools/call_rate"] == {"mean": 3.5, "first": 0.5, "last": 6.5, "steps": 8.0}
    assert summary["tools/failure_frequency"] == {"mean": 0.0, "first": 0.0, "last": 0.0, "steps": 6.0}
    assert math.isnan(summarise_mechanism([{"x": math.nan}])["x"]["mean"])
