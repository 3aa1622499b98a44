"""One training step as plain functions: rollout → attribution → rewards → advantages → update.

`collect` runs the first four stages and returns a `StepRecord` (trajectories, attributions, rewards, advantages,
metrics, timings); `train_step` adds the PPO update. `IAPOModule.training_step`, `IAPOModule.explain` (greedy, no
update) and the benchmark (`python -m iapo.experiments.bench`) all call these, and callbacks read the record from
`on_train_batch_end`'s outputs. Lightning only wraps them: no module state is read here.

    settings = StepSettings(group_size=4, sampling=SamplingSettings(), attribution=AttributionSettings())
    rewards = build_rewards({"accuracy": 1.0, "format": 0.1, "attribution": 0.5}, RewardContext(settings.attribution))
    record = train_step(model, processor, optimizer, samples, images, settings, rewards, teacher=lambda: (t, tp))
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from iapo.agent.rollout import HFPolicy, SamplingSettings, rollout
from iapo.agent.trajectory import Trajectory
from iapo.attribution.align import attribution_terms
from iapo.attribution.methods import DIFFERENTIABLE_METHODS
from iapo.attribution.score import AttributionSettings, attribution_distributions
from iapo.settings_errors import SettingsError
from iapo.training.algo import ADVANTAGE_SCALES, group_advantages
from iapo.training.alignment import alignment_loss
from iapo.training.diagnostics import mechanism_metrics
from iapo.training.guards import DEFAULT_MAX_ABS_WEIGHT, check_trainable_weights, nonfinite_reward_terms
from iapo.training.rewards import ConfiguredRewards, compute_rewards
from iapo.training.update import PPOSettings, policy_update

TeacherLoader = Callable[[], tuple]
"""Returns the frozen teacher's (model, processor), loading it on first use."""


@dataclass
class StepSettings:
    """Everything one step needs besides models, data and rewards (the module's config)."""

    group_size: int = 4
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    attribution: AttributionSettings = field(default_factory=AttributionSettings)
    ppo: PPOSettings = field(default_factory=PPOSettings)
    advantage_scale: str = "group"
    max_abs_weight: float = DEFAULT_MAX_ABS_WEIGHT
    attribution_loss: float = 0.0
    attribution_loss_calls: int | None = None

    @property
    def uses_teacher_attribution(self) -> bool:
        """Whether the step needs the teacher's attribution besides what the rewards need: the attribution loss."""
        return self.attribution_loss > 0

    def __post_init__(self) -> None:
        if self.advantage_scale not in ADVANTAGE_SCALES:
            registered = ", ".join(sorted(ADVANTAGE_SCALES))
            raise SettingsError(f"advantage_scale must be one of {registered}, got {self.advantage_scale!r}")
        if self.group_size < 1:
            raise SettingsError(f"group_size must be >= 1, got {self.group_size}")
        if not self.attribution_loss >= 0:
            raise SettingsError(f"attribution_loss must be >= 0 (0: off), got {self.attribution_loss!r}")
        if self.attribution_loss_calls is not None and self.attribution_loss_calls < 1:
            raise SettingsError(
                f"attribution_loss_calls must be >= 1 (null: every call), got {self.attribution_loss_calls!r}"
            )
        if self.attribution_loss > 0 and self.attribution.method not in DIFFERENTIABLE_METHODS:
            raise SettingsError(
                "attribution_loss needs an attribution method whose scores have a gradient "
                f"{list(DIFFERENTIABLE_METHODS)}, got {self.attribution.method!r}"
            )


@dataclass
class StepRecord:
    """What one step produced: `rewards` holds each reward's values and their weighted `total`; `attributions` one
    `{component: score}` dict per trajectory for the student and the teacher (empty when not attributed)."""

    samples: list
    trajectories: list[Trajectory]
    attributions: dict[str, list[dict]]
    rewards: dict[str, torch.Tensor]
    advantages: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


@contextmanager
def timed(timings: dict[str, float], name: str) -> Iterator[None]:
    """Wall-clock seconds of the block into `timings["time/<name>"]`; on a GPU also its peak memory
    (`memory/<name>_gib`), synchronised so that asynchronous kernels count where they ran."""
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    yield
    if cuda:
        torch.cuda.synchronize()
        timings[f"memory/{name}_gib"] = torch.cuda.max_memory_allocated() / 2**30
    timings[f"time/{name}"] = time.perf_counter() - start


def attribute_both(
    policy_model,
    processor,
    trajectories,
    samples,
    attribution: AttributionSettings,
    teacher: TeacherLoader | None,
    timings,
) -> tuple[dict[str, list[dict]], dict[str, float]]:
    """Student and teacher attribution of the same trajectories (the teacher reads them in its own tokens), and
    their metrics: `attribution/distinct` (attributions computed per trajectory with a target: identical ones are
    computed once) and, for integrated gradients, `attribution/completeness_gap/{student,teacher}` (the median
    relative gap |Σ attr − (f(e) − f(b))| / |f(e) − f(b)| over the step's attributions: how far m is from exact)."""
    stats = {"student": {}, "teacher": {}}
    with timed(timings, "attribution_student"):
        student = attribution_distributions(
            policy_model, processor, trajectories, samples, attribution, stats=stats["student"]
        )
    if teacher is None:  # a run without the attribution reward (GRPO) draws the student's side only
        return {"student": student, "teacher": [{} for _ in trajectories]}, {}
    with timed(timings, "attribution_teacher"):
        teacher_model, teacher_processor = teacher()
        teacher_view = attribution_distributions(
            teacher_model, teacher_processor, trajectories, samples, attribution, reencode=True, stats=stats["teacher"]
        )
    metrics = {"attribution/distinct": stats["student"]["distinct"] / max(stats["student"]["attributed"], 1)}
    for side, measured in stats.items():
        if measured["completeness_gaps"]:
            metrics[f"attribution/completeness_gap/{side}"] = float(np.median(measured["completeness_gaps"]))
    return {"student": student, "teacher": teacher_view}, metrics


def collect(
    policy_model,
    processor,
    samples: list,
    images: list,
    settings: StepSettings,
    rewards: ConfiguredRewards,
    teacher: TeacherLoader | None = None,
    attribute: bool | None = None,
) -> StepRecord:
    """Rollout → attribution → rewards → group advantages, without touching the weights.

    `attribute` defaults to whether a configured reward or the attribution loss needs attribution (then `teacher` is
    required); asked for without a teacher, only the student's attribution is computed and the teacher's dicts stay
    empty.
    """
    needs_teacher = rewards.needs_attribution or settings.uses_teacher_attribution
    attribute = needs_teacher if attribute is None else attribute
    if needs_teacher and teacher is None:
        raise ValueError("the attribution reward and the attribution loss need a teacher: pass `teacher`")
    timings: dict[str, float] = {}
    with timed(timings, "rollout"):
        policy = HFPolicy(policy_model, processor, settings.sampling)
        trajectories = rollout(policy, processor, samples, images, settings.group_size, settings.sampling)
    attribution_metrics: dict[str, float] = {}
    if attribute:
        attributions, attribution_metrics = attribute_both(
            policy_model, processor, trajectories, samples, settings.attribution, teacher, timings
        )
    else:
        attributions = {"student": [{} for _ in trajectories], "teacher": [{} for _ in trajectories]}
    batch = {"samples": samples, "attributions": attributions, "group_size": settings.group_size}
    total, parts = compute_rewards(rewards, trajectories, batch)
    advantages = group_advantages(total, settings.group_size, settings.advantage_scale)
    record = StepRecord(samples, trajectories, attributions, {**parts, "total": total}, advantages, timings=timings)
    record.metrics = rollout_metrics(record, settings) | attribution_metrics
    record.metrics["rewards/nonfinite_terms"] = float(len(nonfinite_reward_terms(record.rewards, rewards.weights)))
    return record


def train_step(
    policy_model,
    processor,
    optimizer,
    samples: list,
    images: list,
    settings: StepSettings,
    rewards: ConfiguredRewards,
    teacher: TeacherLoader | None = None,
    backward: Callable[[torch.Tensor], None] = torch.Tensor.backward,
    on_step: Callable[[], None] | None = None,
) -> StepRecord:
    """`collect`, then the PPO-clip update over μ epochs of mini-batches (with `settings.attribution_loss`, the
    attribution loss added to each mini-batch's: `alignment.alignment_loss`); the update's statistics join the
    metrics.

    After every optimizer step the trainable weights must stay finite and below `settings.max_abs_weight`
    (`TrainingDivergedError` naming the lr otherwise), so exploded weights never reach a checkpoint or a rollout.
    """
    record = collect(policy_model, processor, samples, images, settings, rewards, teacher)

    def after_optimizer_step() -> None:
        if on_step is not None:
            on_step()
        lr = optimizer.param_groups[0]["lr"]
        check_trainable_weights(policy_model.named_parameters(), lr=lr, max_abs=settings.max_abs_weight)

    auxiliary = None
    if settings.attribution_loss > 0:
        teacher_view = record.attributions["teacher"]
        auxiliary = alignment_loss(
            policy_model,
            processor,
            record.trajectories,
            teacher_view,
            settings.attribution,
            settings.attribution_loss,
            settings.attribution_loss_calls,
        )
    with timed(record.timings, "update"):
        stats = policy_update(
            policy_model,
            optimizer,
            record.trajectories,
            record.advantages,
            settings.ppo,
            processor.tokenizer.pad_token_id,
            backward=backward,
            on_step=after_optimizer_step,
            auxiliary_loss=auxiliary,
        )
    record.metrics.update(stats)
    return record


def rollout_metrics(record: StepRecord, settings: StepSettings) -> dict[str, float]:
    """TRL's names: `rewards/<name>/mean` and `/std` per reward, `reward` (mean) and `reward_std` (mean within-group
    standard deviation) of their weighted sum, `frac_reward_zero_std`, `tools/*` (`diagnostics.tool_metrics`),
    `completion_length`; ours: `turns/mean`, `answered`, `errors/<kind>` (per trajectory); and the mechanism
    diagnostics (`iapo.training.diagnostics`): outcome-tied groups, groups the attribution term breaks ties in, its
    within-group rank correlation with the outcome, divergence and attribution mass per component — also under the
    attribution loss without the term in the reward, from the attributions the loss's step computes anyway."""
    trajectories, total, group_size = record.trajectories, record.rewards["total"], settings.group_size
    metrics: dict[str, float] = {}
    for name, values in record.rewards.items():
        if name != "total":
            metrics[f"rewards/{name}/mean"] = float(values.mean())
            metrics[f"rewards/{name}/std"] = float(values.std()) if len(values) > 1 else 0.0
    grouped = total.view(-1, group_size)
    metrics["reward"] = float(total.mean())
    # As TRL: the spread the group-normalised advantages see, i.e. the mean within-group standard deviation.
    metrics["reward_std"] = float(grouped.std(1).mean()) if group_size > 1 else 0.0
    metrics["frac_reward_zero_std"] = float((grouped.max(1).values == grouped.min(1).values).float().mean())
    term = record.rewards.get("attribution")
    if term is None and settings.uses_teacher_attribution:  # the loss's arm: its term, for the diagnostics only
        a = settings.attribution
        student, teacher = record.attributions["student"], record.attributions["teacher"]
        term, _ = attribution_terms(
            student, teacher, a.divergence, a.form, a.missing_target, group_size, a.kl_smoothing
        )
    metrics.update(
        mechanism_metrics(
            outcome=record.rewards.get("accuracy", record.rewards.get("judge", total)),
            total=total,
            attribution_term=term,
            student=record.attributions["student"] if term is not None else None,
            teacher=record.attributions["teacher"] if term is not None else None,
            trajectories=trajectories,
            group_size=group_size,
            divergence=settings.attribution.divergence,
            kl_smoothing=settings.attribution.kl_smoothing,
        )
    )
    metrics["turns/mean"] = float(np.mean([len(t.turns) for t in trajectories]))
    metrics["completion_length"] = float(np.mean([t.completion_length for t in trajectories]))
    metrics["answered"] = float(np.mean([t.final_answer is not None for t in trajectories]))
    errors = Counter()
    for t in trajectories:
        errors.update(t.stats.errors)
    for kind, count in errors.items():
        metrics[f"errors/{kind}"] = count / len(trajectories)
    return metrics
