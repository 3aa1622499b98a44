"""Attribution distributions of a batch of trajectories for one model (student, or teacher on the same trajectories).

The student scores its own token sequence; the teacher reads the same interaction re-encoded with its own processor
(`retokenize`), so its components are found by meaning and the two distributions share keys.

    settings = AttributionSettings(method="grad_x_input", grid=(3, 3))
    student = attribution_distributions(student_model, student_processor, trajectories, samples, settings)
    teacher = attribution_distributions(teacher_model, teacher_processor, trajectories, samples, settings)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from iapo.agent.retokenize import retokenize
from iapo.agent.trajectory import Trajectory
from iapo.attribution.align import normalize
from iapo.attribution.components import target_mask, trajectory_components
from iapo.attribution.methods import METHODS, attribute


@dataclass
class AttributionSettings:
    """How attributions are computed and compared (DESIGN §3 "Components", "Attribution")."""

    method: str = "grad_x_input"
    target: str = "answer"
    grid: tuple[int, int] = (3, 3)
    divergence: str = "jsd"
    include_history: bool = False
    include_system: bool = False
    baseline: str = "zero"
    batch_size: int = 8

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"attribution method must be one of {sorted(METHODS)}, got {self.method!r}")
        if self.target not in ("answer", "generated"):
            raise ValueError(f"attribution target must be 'answer' or 'generated', got {self.target!r}")


def attribution_distributions(
    model, processor, trajectories: list[Trajectory], samples, settings: AttributionSettings, reencode: bool = False
) -> list[dict[str, float]]:
    """One normalised `{component: weight}` per trajectory; `{}` for a trajectory without a target (no answer).

    `reencode=True` first re-encodes each trajectory with `processor` (for a teacher with its own tokenizer or
    image resolution).
    """
    views = [retokenize(t, samples[t.sample_index], processor) for t in trajectories] if reencode else trajectories
    merge = processor.image_processor.merge_size
    out: list[dict[str, float]] = []
    for start in range(0, len(views), settings.batch_size):
        chunk = views[start : start + settings.batch_size]
        components = [
            trajectory_components(t, merge, settings.grid, settings.include_history, settings.include_system)
            for t in chunk
        ]
        targets = [target_mask(t, processor.tokenizer, settings.target) for t in chunk]
        scores = attribute(
            model,
            chunk,
            components,
            targets,
            processor.tokenizer.pad_token_id,
            method=settings.method,
            baseline=settings.baseline,
        )
        for raw in scores:
            if not raw:
                out.append({})
                continue
            keys = sorted(raw)
            weights = normalize(torch.tensor([raw[k] for k in keys], dtype=torch.float32))
            out.append(dict(zip(keys, weights.tolist(), strict=True)))
    return out
