"""Rewards as registered entries, configured by name and weight (TRL's `reward_funcs` / `reward_weights` idea).

Every reward has one signature, `reward(trajectories, batch) -> Tensor[N]`, and is logged alone as
`rewards/<name>/mean` and `rewards/<name>/std`. `batch` is the training batch (`samples`, ...) plus what the step added: `attributions =
{"student": [...], "teacher": [...]}`, one `{component: score}` dict per trajectory (empty when the trajectory has no
attribution target). A reward that reads attributions declares `needs_attribution`; the teacher is loaded, and
attribution computed, only when a configured reward with a non-zero weight needs it — GRPO is the same config
without the attribution reward.

    # config (IAPOModule.rewards): name -> weight; a weight of 0 drops the reward
    rewards: {accuracy: 1.0, format: 0.1, attribution: 0.5}

    @register_reward("length")
    class LengthPenalty:                       # a new reward is one entry
        def __init__(self, context: RewardContext) -> None: ...
        def __call__(self, trajectories, batch) -> torch.Tensor: ...

    rewards = build_rewards({"accuracy": 1.0, "format": 0.1}, RewardContext())
    total, parts = compute_rewards(rewards, trajectories, batch)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from iapo.agent.trajectory import Trajectory
from iapo.attribution.align import attribution_terms
from iapo.attribution.score import AttributionSettings
from iapo.evaluation.judge import JudgeReward, JudgeSettings
from iapo.evaluation.scoring import score_sample
from iapo.settings_errors import SettingsError
from iapo.training.algo import combine_rewards

Reward = Callable[[list[Trajectory], dict], torch.Tensor]


@dataclass(frozen=True)
class RewardContext:
    """What a reward may be built from: the run's settings that rewards depend on."""

    attribution: AttributionSettings = field(default_factory=AttributionSettings)
    judge: JudgeSettings | None = None


@dataclass(frozen=True)
class RewardEntry:
    factory: Callable[[RewardContext], Reward]
    needs_attribution: bool = False


REWARDS: dict[str, RewardEntry] = {}


def register_reward(name: str, needs_attribution: bool = False):
    """Class (or factory) decorator: `factory(context) -> reward` becomes the reward `name`."""

    def register(factory):
        REWARDS[name] = RewardEntry(factory, needs_attribution)
        return factory

    return register


@dataclass
class ConfiguredRewards:
    """The rewards of a run: callables and weights by name (weight-0 rewards are left out)."""

    rewards: dict[str, Reward]
    weights: dict[str, float]
    needs_attribution: bool


def build_rewards(weights: dict[str, float], context: RewardContext | None = None) -> ConfiguredRewards:
    """Instantiate the configured rewards; an unknown name is one clear error listing the registered ones."""
    unknown = sorted(set(weights) - set(REWARDS))
    if unknown:
        raise SettingsError(f"unknown reward(s) {unknown}; registered: {sorted(REWARDS)}")
    context = context or RewardContext()
    active = {name: float(weight) for name, weight in weights.items() if weight != 0}
    if not active:
        raise SettingsError("every reward weight is 0: configure at least one reward, e.g. {accuracy: 1.0}")
    return ConfiguredRewards(
        rewards={name: REWARDS[name].factory(context) for name in active},
        weights=active,
        needs_attribution=any(REWARDS[name].needs_attribution for name in active),
    )


def compute_rewards(
    configured: ConfiguredRewards, trajectories: list[Trajectory], batch: dict
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted sum of the rewards and each reward's own values (for logging)."""
    parts = {name: reward(trajectories, batch).float() for name, reward in configured.rewards.items()}
    return combine_rewards(parts, configured.weights), parts


@register_reward("accuracy")
class AccuracyReward:
    """The data set's own soft score of the final answer (MCQ letter, yes/no, relaxed accuracy, ANLS, ...)."""

    def __init__(self, context: RewardContext | None = None) -> None:
        pass

    def __call__(self, trajectories: list[Trajectory], batch: dict) -> torch.Tensor:
        samples = batch["samples"]
        return torch.tensor([score_sample(t.final_answer, samples[t.sample_index]) for t in trajectories])


@register_reward("format")
class FormatReward:
    """1 for a well-formed trajectory (an answer, no malformed turn or tool call), else 0."""

    def __init__(self, context: RewardContext | None = None) -> None:
        pass

    def __call__(self, trajectories: list[Trajectory], batch: dict) -> torch.Tensor:
        return torch.tensor([float(t.well_formed) for t in trajectories])


@register_reward("tool_call")
class ToolCallReward:
    """1 for a trajectory that calls a tool and whose calls all ran (no failed call), else 0: blind to which call was
    made. Meant beside the attribution reward when the outcome weight is 0: a trajectory without a call is not
    attributed, so otherwise a group whose samples all skip the tool has no spread and nothing rewards calling again
    (docs/results.md, "Optimisability on the 6-bar pair", measures when it is enough)."""

    def __init__(self, context: RewardContext | None = None) -> None:
        pass

    def __call__(self, trajectories: list[Trajectory], batch: dict) -> torch.Tensor:
        return torch.tensor([float(t.stats.calls > 0 and t.stats.failures == 0) for t in trajectories])


@register_reward("attribution", needs_attribution=True)
class AttributionReward:
    """The attribution term: −D(student ‖ teacher) (`form: penalty`, the paper's r − λ·KL) or 1 − D (`form:
    similarity`, a bounded D such as JSD); `missing_target` decides a trajectory without a target (0, or its
    group's mean term). λ is this reward's weight."""

    def __init__(self, context: RewardContext | None = None) -> None:
        self.settings = (context or RewardContext()).attribution

    def __call__(self, trajectories: list[Trajectory], batch: dict) -> torch.Tensor:
        s = self.settings
        attributions = batch["attributions"]
        terms, _ = attribution_terms(
            attributions["student"],
            attributions["teacher"],
            s.divergence,
            s.form,
            s.missing_target,
            batch.get("group_size", 1),
            s.kl_smoothing,
        )
        return terms


@register_reward("judge")
def judge_reward(context: RewardContext) -> JudgeReward:
    """The judge's verdict as the outcome reward (VTool-R1 trained with a judge): 1 correct, else 0."""
    if context.judge is None:
        raise SettingsError("the judge reward needs `model.init_args.judge: {backend: ..., model: ...}`")
    return JudgeReward(context.judge)
