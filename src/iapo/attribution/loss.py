"""The divergence to the teacher as a function of the student's weights: the attribution term as a *loss*.

IAPO's term enters the reward (`align.attribution_terms`): the policy gradient credits the sampled tokens and does
not differentiate through the attribution, so it can change which calls the student makes but not how it attributes
a call (docs/results.md, "Why RL on the term raised the divergence"). Here the student's attribution of each call is
recomputed with its graph to the weights (`methods.attribution_scores(differentiable=True)`: occlusion, or a
gradient method with second derivatives) and compared with the teacher's fixed attribution of the same trajectory,
by the reward's divergence over the student's components — the same number `attribution_terms` gives, now with a
gradient.

    values = teacher_divergences(model, processor, trajectories, teacher, settings, grad=True)  # None: no target
    loss = torch.stack([v for v in values if v is not None]).mean()

Run the checks with `python -m pytest tests/test_lever.py -q`.
"""

from __future__ import annotations

import torch

from iapo.attribution.align import DIVERGENCES, kl, normalize
from iapo.attribution.components import get_layout, target_mask
from iapo.attribution.methods import attribution_scores
from iapo.attribution.prefix import through_target_turn
from iapo.attribution.score import AttributionSettings, has_target


def teacher_divergences(
    model,
    processor,
    trajectories: list,
    teacher: list[dict[str, float]],
    settings: AttributionSettings,
    grad: bool = False,
) -> list:
    """D(student ‖ teacher) of every trajectory that has `settings.target` and a teacher attribution (None for the
    rest) under `model`'s current weights, `settings.batch_size` trajectories per pass; with `grad` each value is a
    0-dim tensor that keeps its graph to the weights, else a float."""
    out: list = [None] * len(trajectories)
    present = [i for i, t in enumerate(trajectories) if teacher[i] and has_target(t, settings.target)]
    merge = processor.image_processor.merge_size
    for start in range(0, len(present), settings.batch_size):
        rows = present[start : start + settings.batch_size]
        chunk = [through_target_turn(trajectories[i], settings.target) for i in rows]
        components = [get_layout(settings.layout)(t, merge, settings) for t in chunk]
        targets = [target_mask(t, processor.tokenizer, settings.target) for t in chunk]
        with torch.set_grad_enabled(grad):
            scores, keys, active = attribution_scores(
                model,
                chunk,
                components,
                targets,
                processor.tokenizer.pad_token_id,
                method=settings.method,
                baseline=settings.baseline,
                steps=settings.steps,
                chunk_size=settings.chunk_size,
                fast=settings.fast,
                quadrature=settings.quadrature,
                token_scores=settings.token_scores,
                differentiable=grad,
            )
            for row, j in enumerate(active):
                own = [k for k, key in enumerate(keys) if key in components[j]]
                p = normalize(scores[row, own].float())
                q = normalize(torch.tensor([teacher[rows[j]].get(keys[k], 0.0) for k in own], device=p.device))
                value = (
                    kl(p, q, settings.kl_smoothing)
                    if settings.divergence == "kl"
                    else DIVERGENCES[settings.divergence](p, q)
                )
                out[rows[j]] = value if grad else float(value)
    return out
