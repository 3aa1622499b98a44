"""Reward callables. Every reward has one signature, `reward(trajectories, batch) -> Tensor[N]`, and is logged alone.

`batch` is the training batch (`samples`, ...) plus what scoring added: `attributions = {"student": [...],
"teacher": [...]}`, one `{component: score}` dict per trajectory (empty when the trajectory has no answer).

    r = r_acc + w_fmt · r_fmt + w_attr · r_attr          (weights from config; w_attr = 0 is GRPO)

    rewards = {name: REWARDS[name]() for name in weights}
    total, parts = compute_rewards(rewards, weights, trajectories, batch)
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from iapo.agent.trajectory import Trajectory
from iapo.attribution.align import DIVERGENCES, align_distributions
from iapo.evaluation.scoring import score_sample
from iapo.training.algo import combine_rewards

Reward = Callable[[list[Trajectory], dict], torch.Tensor]


class AccuracyReward:
    """The data set's own soft score of the final answer (MCQ letter, yes/no, relaxed accuracy, ANLS, ...)."""

    def __call__(self, trajectories: list[Trajectory], batch: dict) -> torch.Tensor:
        samples = batch["samples"]
        return torch.tensor([score_sample(t.final_answer, samples[t.sample_index]) for t in trajectories])


class FormatReward:
    """1 for a well-formed trajectory (an answer, no malformed turn or tool call), else 0."""

    def __call__(self, trajectories: list[Trajectory], batch: dict) -> torch.Tensor:
        return torch.tensor([float(t.well_formed) for t in trajectories])


class AttributionReward:
    """1 − divergence(student ‖ teacher) over the union of components; 0 for a trajectory with no target."""

    def __init__(self, divergence: str = "jsd") -> None:
        if divergence not in DIVERGENCES:
            raise ValueError(f"divergence must be one of {sorted(DIVERGENCES)}, got {divergence!r}")
        self.divergence = DIVERGENCES[divergence]

    def __call__(self, trajectories: list[Trajectory], batch: dict) -> torch.Tensor:
        student, teacher = batch["attributions"]["student"], batch["attributions"]["teacher"]
        values = []
        for s, t in zip(student, teacher, strict=True):
            if not s or not t:
                values.append(0.0)
                continue
            _, p, q = align_distributions(s, t)
            values.append(1.0 - float(self.divergence(p, q)))
        return torch.tensor(values)


REWARDS: dict[str, type] = {"accuracy": AccuracyReward, "format": FormatReward, "attribution": AttributionReward}


def compute_rewards(
    rewards: dict[str, Reward], weights: dict[str, float], trajectories: list[Trajectory], batch: dict
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted sum of the rewards and each reward's own values (for logging)."""
    parts = {name: reward(trajectories, batch).float() for name, reward in rewards.items()}
    return combine_rewards(parts, weights), parts
