"""The attribution loss: λ_a · D(student ‖ teacher) through the student's own attribution of its calls
(`attribution.loss.teacher_divergences`), the teacher's attribution of the same trajectories held fixed.

Off by default (the paper's IAPO has the term in the reward only). With `attribution_loss: λ_a` the PPO update adds
it to each mini-batch's loss (`update.policy_update(auxiliary_loss=...)`), over the mini-batch's trajectories that
have the attribution target: the reward chooses among sampled calls, the loss moves how a call is attributed
(docs/method.md, "The attribution loss"). One optimizer step per mini-batch as before, so `trainer.max_steps` keeps
its meaning. With `max_calls` each mini-batch's loss is the mean over that many of its calls drawn at random (an
unbiased estimate of the mean over all): the second-order backward through each call's attribution is most of the
step's cost and memory.

    loss_of = alignment_loss(model, processor, trajectories, teacher, settings.attribution, weight=1.0)
    loss = loss_of([0, 1, 2, 3])   # None when none of them has a call and a teacher attribution
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from iapo.attribution.loss import teacher_divergences
from iapo.attribution.score import AttributionSettings, has_target


def alignment_loss(
    model,
    processor,
    trajectories: list,
    teacher: list[dict[str, float]],
    attribution: AttributionSettings,
    weight: float,
    max_calls: int | None = None,
) -> Callable[[list[int]], torch.Tensor | None]:
    """The loss of any subset of `trajectories` (their indices): `weight` · the mean divergence of those with the
    target and a teacher attribution (of at most `max_calls` of them, drawn with torch's generator), with its graph to
    the weights; None when there is none."""
    if max_calls is not None and max_calls < 1:
        raise ValueError(f"max_calls must be >= 1 (None: every call), got {max_calls}")

    def loss_of(index: list[int]) -> torch.Tensor | None:
        rows = [i for i in index if teacher[i] and has_target(trajectories[i], attribution.target)]
        if not rows:
            return None
        if max_calls is not None and len(rows) > max_calls:
            rows = [rows[k] for k in sorted(torch.randperm(len(rows))[:max_calls].tolist())]
        values = teacher_divergences(
            model, processor, [trajectories[i] for i in rows], [teacher[i] for i in rows], attribution, grad=True
        )
        return weight * torch.stack([v for v in values if v is not None]).mean()

    return loss_of
