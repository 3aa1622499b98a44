"""Attribution distributions of a batch of trajectories for one model (student, or teacher on the same trajectories).

The student scores its own token sequence; the teacher reads the same interaction re-encoded with its own processor
(`retokenize`), so its components are found by meaning and the two distributions share keys.

    settings = AttributionSettings(method="integrated_gradients", target="tool_call", layout="blocks")
    student = attribution_distributions(student_model, student_processor, trajectories, samples, settings)
    teacher = attribution_distributions(teacher_model, teacher_processor, trajectories, samples, settings, reencode=True)
    terms, attributed = attribution_terms(student, teacher, settings.divergence, settings.form,
                                          settings.missing_target, group_size, settings.kl_smoothing)

The paper's variant (docs/method.md): `method: integrated_gradients, target: tool_call, layout: blocks, divergence: kl,
form: penalty`. A trajectory without a target (no tool call, or no answer) is not run through the model and gets
`{}`; `missing_target` says what its reward term is (`align.attribution_terms`). With `fast`, each trajectory is cut
after the turn holding its last target and each distinct cut (`prefix.attribution_key`) is attributed once.

Run the checks with `python -m pytest tests/test_attribution.py tests/test_ig.py -q`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from iapo.agent.retokenize import retokenize
from iapo.agent.trajectory import Trajectory
from iapo.attribution.align import (
    BOUNDED_DIVERGENCES,
    DEFAULT_KL_SMOOTHING,
    DIVERGENCES,
    FORMS,
    MISSING_TARGETS,
    normalize,
)
from iapo.attribution.components import LAYOUTS, TARGETS, get_layout, target_mask, target_turn
from iapo.attribution.methods import BASELINES, GRADIENT_METHODS, METHODS, TOKEN_SCORES, attribute
from iapo.attribution.prefix import attribution_key, through_target_turn
from iapo.attribution.quadrature import QUADRATURES
from iapo.settings_errors import SettingsError


@dataclass
class AttributionSettings:
    """How attributions are computed and compared (docs/method.md, "Attribution").

    Args:
        method: a registered method (`methods.register_method`): `integrated_gradients`, `grad_x_input`,
            `occlusion` or `attention` built in.
        target: whose log-prob is attributed, a registered target (`components.register_target`): `answer`,
            `generated` or `tool_call` built in.
        layout: a registered layout (`components.register_layout`): `regions` (image grid cells, crops,
            question, ...) or `blocks` (the paper's P / R / I / T) built in.
        grid: R × C cells of the original image (`regions` only).
        divergence: `jsd`, `cosine` or `kl` (student ‖ teacher).
        form: the reward term, `penalty` (−λ·D) or `similarity` (λ·(1 − D), D in [0, 1]).
        kl_smoothing: ε of `kl`'s additive smoothing (an empty component cannot make it infinite).
        missing_target: the term of a trajectory without a target: `zero`, or `exclude` (its group's mean term).
            With `form: penalty` every attributed term is ≤ 0, so `zero` would pay a trajectory for skipping the tool
            call the term attributes: refused unless `allow_missing_target_advantage`.
        allow_missing_target_advantage: accept `penalty` with `zero` knowingly.
        include_history, include_system: extra `regions` components.
        baseline: the reference input, `zero` or `mean` (the row's mean embedding).
        steps: m, interpolation points of `integrated_gradients`.
        token_scores: how a gradient method scores a token (`methods.TOKEN_SCORES`): `abs`, the magnitude of its
            attribution (the default; evidence for or against the target alike), or `positive`, only evidence for
            the target.
        quadrature: how `integrated_gradients` places and weighs its m points: `riemann` (right Riemann sum) or
            `gauss_legendre` (`quadrature.py`).
        chunk_size: sequences per forward/backward of `integrated_gradients` (bounds its memory).
        batch_size: trajectories per `attribute` call.
        fast: the exact shortcuts: a trajectory without a target is dropped before anything else (the teacher never
            re-encodes it), every trajectory is cut after the turn holding its last target and identical cuts are
            attributed once (`prefix.py`), each distinct image goes through the vision tower once, and every sequence
            is cut after its last target token (`methods.attribute`); False runs the plain path, kept for
            comparison (`python -m iapo.experiments.bench`).
        deduplicate: with `fast`, identical cuts are attributed once (exact; False attributes every trajectory,
            kept for comparison).
        completeness_rows: distinct attributions per step and model whose relative completeness gap is measured
            and logged (`integrated_gradients`; two forwards each, no backward); 0 measures none. A sample keeps the
            monitor cheap (each row measured costs two forwards; IG at m = 3 costs three forwards and backwards).
    """

    method: str = "grad_x_input"
    target: str = "answer"
    layout: str = "regions"
    grid: tuple[int, int] = (3, 3)
    divergence: str = "jsd"
    form: str = "similarity"
    kl_smoothing: float = DEFAULT_KL_SMOOTHING
    missing_target: str = "zero"
    allow_missing_target_advantage: bool = False
    include_history: bool = False
    include_system: bool = False
    baseline: str = "zero"
    steps: int = 16
    quadrature: str = "riemann"
    token_scores: str = "abs"
    chunk_size: int = 8
    batch_size: int = 8
    fast: bool = True
    deduplicate: bool = True
    completeness_rows: int = 2

    def __post_init__(self) -> None:
        for name, valid in (
            ("method", sorted(METHODS)),
            ("target", list(TARGETS)),
            ("layout", list(LAYOUTS)),
            ("divergence", sorted(DIVERGENCES)),
            ("form", list(FORMS)),
            ("missing_target", list(MISSING_TARGETS)),
            ("baseline", list(BASELINES)),
            ("quadrature", list(QUADRATURES)),
            ("token_scores", list(TOKEN_SCORES)),
        ):
            if getattr(self, name) not in valid:
                raise SettingsError(f"attribution {name} must be one of {valid}, got {getattr(self, name)!r}")
        if self.token_scores != "abs" and self.method not in GRADIENT_METHODS:
            raise SettingsError(
                f"attribution token_scores {self.token_scores!r} needs a gradient method {list(GRADIENT_METHODS)}, "
                f"got method {self.method!r}"
            )
        if not isinstance(self.completeness_rows, int) or self.completeness_rows < 0:
            raise SettingsError(
                f"attribution completeness_rows must be an integer >= 0, got {self.completeness_rows!r}"
            )
        for name in ("steps", "chunk_size", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise SettingsError(f"attribution {name} must be an integer >= 1, got {value!r}")
        if len(self.grid) != 2 or min(self.grid) < 1:
            raise SettingsError(f"attribution grid must be two integers >= 1 (rows, columns), got {self.grid!r}")
        if not self.kl_smoothing >= 0:
            raise SettingsError(f"attribution kl_smoothing must be >= 0, got {self.kl_smoothing!r}")
        if self.form == "penalty" and self.missing_target == "zero" and not self.allow_missing_target_advantage:
            raise SettingsError(
                "attribution form 'penalty' with missing_target 'zero' pays a trajectory without a target (no tool "
                "call) 0, more than any attributed one (−D ≤ 0): use missing_target 'exclude' (its group's mean "
                "term), or set attribution.allow_missing_target_advantage: true"
            )
        if self.form == "similarity" and self.divergence not in BOUNDED_DIVERGENCES:
            raise SettingsError(
                f"attribution form 'similarity' (1 − D) needs a divergence in {list(BOUNDED_DIVERGENCES)}, "
                f"got {self.divergence!r}: use form 'penalty' with it"
            )


def attribution_distributions(
    model,
    processor,
    trajectories: list[Trajectory],
    samples,
    settings: AttributionSettings,
    reencode: bool = False,
    stats: dict | None = None,
) -> list[dict[str, float]]:
    """One normalised `{component: weight}` per trajectory; `{}` for a trajectory without a target (no answer, or
    no tool call for `target: tool_call`), which the reward tells apart (`align.attribution_terms`).

    `reencode=True` first re-encodes each trajectory with `processor` (for a teacher with its own tokenizer or
    image resolution). `stats`, when given, receives `attributed` (trajectories with a target), `distinct` (the
    attributions computed: identical cuts count once with `fast`) and `completeness_gaps` (one relative gap per
    distinct attribution, `integrated_gradients` only).
    """
    attributed = list(range(len(trajectories)))
    chosen, source = trajectories, attributed  # source[j]: which computed attribution trajectory attributed[j] takes
    if settings.fast:
        # a trajectory without a target gets `{}` whatever the model: decided from its turns, before any encoding;
        # the rest are cut after their last target's turn, and identical cuts share one attribution
        attributed = [i for i, t in enumerate(trajectories) if has_target(t, settings.target)]
        rank: dict[tuple | int, int] = {}
        chosen, source = [], []
        for i in attributed:
            cut = through_target_turn(trajectories[i], settings.target)
            key = attribution_key(cut) if settings.deduplicate else len(rank)  # else: a key of its own
            if key not in rank:
                rank[key] = len(chosen)
                chosen.append(cut)
            source.append(rank[key])
    views = [retokenize(t, samples[t.sample_index], processor) for t in chosen] if reencode else chosen
    merge = processor.image_processor.merge_size
    distributions: list[dict[str, float]] = []
    gaps: list[float] = []
    for start in range(0, len(views), settings.batch_size):
        chunk = views[start : start + settings.batch_size]
        components = [get_layout(settings.layout)(t, merge, settings) for t in chunk]
        targets = [target_mask(t, processor.tokenizer, settings.target) for t in chunk]
        scores = attribute(
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
            completeness=gaps if len(gaps) < settings.completeness_rows else None,
            completeness_rows=settings.completeness_rows - len(gaps),
            token_scores=settings.token_scores,
        )
        distributions += [normalized(raw) for raw in scores]
    if stats is not None:
        with_target = sum(has_target(t, settings.target) for t in trajectories)
        distinct = len(views) if settings.fast else with_target
        stats.update(attributed=with_target, distinct=distinct, completeness_gaps=gaps)
    out: list[dict[str, float]] = [{} for _ in trajectories]
    for index, computed in zip(attributed, source, strict=True):
        out[index] = dict(distributions[computed])
    return out


def normalized(raw: dict[str, float]) -> dict[str, float]:
    """Raw scores as a distribution over their keys (`align.normalize`); `{}` stays `{}`."""
    if not raw:
        return {}
    keys = sorted(raw)
    weights = normalize(torch.tensor([raw[k] for k in keys], dtype=torch.float32))
    return dict(zip(keys, weights.tolist(), strict=True))


def has_target(trajectory: Trajectory, target: str) -> bool:
    """Whether `target_mask(trajectory, tokenizer, target)` has a token, read from the turns alone (so it holds for
    every tokenizer's view of the trajectory): the target names a turn (`components.Target.turn`)."""
    return target_turn(trajectory, target) is not None
