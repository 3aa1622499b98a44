"""Guards of a training run: one clear error instead of a run that never ends or writes exploded weights.

Plain functions and a small counter, no Lightning; the training step calls them:

    guard = NonFiniteGuard(max_skipped_steps=3)
    stats = policy_update(..., on_step=lambda: check_trainable_weights(model.named_parameters(), lr))
    guard.update(stats["skipped_nonfinite"], stats["optimizer_steps"], rewards, weights)

- `NonFiniteGuard`: a step whose every update was skipped (loss or gradient not finite) cannot advance
  `global_step`, so a run with `max_steps` would never end; after `max_skipped_steps` such steps in a row it raises
  `TrainingDivergedError`, naming the reward terms that are not finite (e.g. `format_weight: 1e39` overflows float32).
- `check_trainable_weights`: after an optimizer step, a trainable weight that is not finite or larger than
  `max_abs` (LoRA weights are far below 1; `lr: 1e30` makes them about 1e30) raises `TrainingDivergedError` naming
  the weight and the learning rate, before the exploded weights reach a checkpoint or the next rollout.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch

DEFAULT_MAX_ABS_WEIGHT = 1e4
"""Largest |w| a trainable weight may reach. LoRA factors stay well below 1 and full weights of the models trained
here below 1e3; 1e4 leaves room and still catches a learning rate that throws weights to 1e30 in one step."""


class TrainingDivergedError(RuntimeError):
    """Training cannot go on: every update skipped for too long, or the trainable weights exploded."""


def nonfinite_reward_terms(rewards: Mapping[str, torch.Tensor], weights: Mapping[str, float]) -> list[str]:
    """The weighted reward terms (`weight × values`, in the values' float precision) that are not all finite, as
    ``"name (weight w)"``; a weight that overflows the values' dtype (1e39 in float32) shows up here too."""
    bad = []
    for name, weight in weights.items():
        values = rewards.get(name)
        if values is None:
            continue
        values = values.detach().float()
        weighted = values * torch.tensor(weight, dtype=values.dtype)
        if not bool(torch.isfinite(weighted).all()):
            bad.append(f"{name} (weight {weight:g})")
    return bad


@dataclass
class NonFiniteGuard:
    """Counts training steps in a row whose every update was skipped as not finite; raises after
    `max_skipped_steps` of them. A step with at least one optimizer step resets the count."""

    max_skipped_steps: int = 3
    consecutive: int = 0

    def __post_init__(self) -> None:
        if self.max_skipped_steps < 1:
            raise ValueError(f"max_skipped_steps must be >= 1, got {self.max_skipped_steps}")

    def update(
        self,
        skipped: float,
        stepped: float,
        rewards: Mapping[str, torch.Tensor] | None = None,
        weights: Mapping[str, float] | None = None,
    ) -> None:
        """Record one training step: `skipped` mini-batch updates skipped as not finite, `stepped` optimizer steps
        taken (`policy_update`'s `skipped_nonfinite` and `optimizer_steps`); `rewards` and `weights` (the step's
        reward values by name and their configured weights) only sharpen the error message."""
        if stepped > 0 or skipped == 0:
            self.consecutive = 0
            return
        self.consecutive += 1
        if self.consecutive < self.max_skipped_steps:
            return
        terms = nonfinite_reward_terms(rewards or {}, weights or {})
        cause = (
            f"the weighted rewards {', '.join(terms)} are not finite: lower those weights"
            if terms
            else "the rewards are finite, so the loss or gradients overflow: lower the learning rate (`lr`) or check "
            "the model's dtype"
        )
        raise TrainingDivergedError(
            f"{self.consecutive} training steps in a row skipped every update (loss or gradient not finite), so the "
            f"step counter cannot advance; stopping. Cause: {cause}."
        )


def check_trainable_weights(
    named_parameters: Iterable[tuple[str, torch.Tensor]],
    lr: float,
    max_abs: float = DEFAULT_MAX_ABS_WEIGHT,
    step: int | None = None,
) -> float:
    """Largest |w| over the trainable weights; raises `TrainingDivergedError` naming the worst weight and `lr` when
    one is not finite or above `max_abs`.

    One device-to-host copy for all weights (not one per tensor), so it is cheap enough to run after every
    optimizer step.
    """
    named = [(name, p.detach()) for name, p in named_parameters if p.requires_grad and p.numel()]
    if not named:
        return 0.0
    peaks = [weight.abs().amax().float() for _, weight in named]
    device = peaks[0].device
    values = torch.stack([peak.to(device) for peak in peaks]).cpu()
    nonfinite = ~torch.isfinite(values)
    worst = int(nonfinite.nonzero()[0]) if bool(nonfinite.any()) else int(values.argmax())
    peak = float(values[worst])
    if math.isfinite(peak) and peak <= max_abs:
        return peak
    where = f"after optimizer step {step}" if step is not None else "after an optimizer step"
    state = f"is not finite ({peak})" if not math.isfinite(peak) else f"reached |w| = {peak:.3g} (limit {max_abs:g})"
    raise TrainingDivergedError(
        f"{where} the trainable weight {named[worst][0]} {state}: the learning rate lr={lr:g} is too high for this "
        "model; lower `model.init_args.lr`."
    )
