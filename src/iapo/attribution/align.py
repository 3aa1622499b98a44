"""Compare two attribution distributions over the same named components (student vs teacher), and IAPO's reward term.

Attribution scores arrive as {component key: non-negative score} per model (keys such as `image/r0c1`, `tool/1`,
`question`, or the blocks `P`/`R`/`I`/`T`). `align_distributions` puts both on the union of keys in sorted order and
normalises each to a distribution; `jsd` (base 2, in [0, 1]), `cosine_distance` (in [0, 1]) or `kl` (student ‖
teacher, nats, additively smoothed so an empty component cannot make it infinite) then measure how far apart they
are. All divergence functions batch over leading dims; the last dim indexes components.

The attribution term enters the reward with weight λ (`FORMS`):

    penalty:     term = −D(student ‖ teacher)     r = r_outcome − λ·D      (the paper: D = KL)
    similarity:  term = 1 − D                      r = r_outcome + λ·(1 − D) (D bounded in [0, 1]: jsd, cosine)

`attribution_terms` does a batch, including trajectories without an attribution target (an empty dict, see
`attribution_distributions`): `missing_target="zero"` gives them the term 0; `"exclude"` gives them the mean term of
the attributed trajectories of their group, so the missing target neither raises nor lowers their reward against
their group.

Run the checks with `python -m pytest tests/test_align.py -q`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def normalize(scores: Tensor, eps: float = 1e-12) -> Tensor:
    """Scale non-negative scores [..., K] to distributions over the last dim [..., K].

    A row whose sum is <= eps (e.g. all zeros: the target ignores every component) becomes uniform.
    Negative or non-finite scores raise ValueError; take |scores| or clamp them before calling.
    """
    if scores.dim() == 0 or scores.shape[-1] == 0:
        raise ValueError(f"scores need a non-empty last (component) dim, got shape {tuple(scores.shape)}")
    if not torch.isfinite(scores).all():
        raise ValueError("attribution scores contain NaN or inf")
    if (scores < 0).any():
        raise ValueError(f"attribution scores must be non-negative, got min {scores.min().item():.3g}")
    scores = scores if scores.is_floating_point() else scores.float()
    total = scores.sum(dim=-1, keepdim=True)
    degenerate = total <= eps
    uniform = torch.full_like(scores, 1.0 / scores.shape[-1])
    return torch.where(degenerate, uniform, scores / torch.where(degenerate, torch.ones_like(total), total))


def jsd(p: Tensor, q: Tensor) -> Tensor:
    """Jensen-Shannon divergence in bits between distributions p, q [..., K] -> [...], in [0, 1].

    Symmetric; 0 iff p == q, 1 for disjoint supports; zero entries are handled (0 * log 0 = 0) with finite
    gradients, so it can serve as a differentiable loss. Inputs must already be distributions (see `normalize`).
    """
    if p.shape != q.shape:
        raise ValueError(f"p and q must have the same shape, got {tuple(p.shape)} and {tuple(q.shape)}")
    m = 0.5 * (p + q)
    return (0.5 * (_kl_nats(p, m) + _kl_nats(q, m)) / math.log(2)).clamp(0.0, 1.0)


def _kl_nats(p: Tensor, m: Tensor) -> Tensor:
    """KL(p || m) in nats over the last dim, for m > 0 wherever p > 0; entries with p == 0 contribute 0."""
    tiny = torch.finfo(p.dtype).tiny
    return (p * (p.clamp_min(tiny).log() - m.clamp_min(tiny).log())).sum(dim=-1)


def cosine_distance(p: Tensor, q: Tensor) -> Tensor:
    """1 - cosine similarity over the last dim, [..., K] -> [...]; in [0, 1] for non-negative inputs.

    A zero vector has similarity 0 to everything (distance 1).
    """
    if p.shape != q.shape:
        raise ValueError(f"p and q must have the same shape, got {tuple(p.shape)} and {tuple(q.shape)}")
    return (1.0 - F.cosine_similarity(p, q, dim=-1, eps=1e-12)).clamp_min(0.0)


DEFAULT_KL_SMOOTHING = 1e-3


def kl(p: Tensor, q: Tensor, smoothing: float = DEFAULT_KL_SMOOTHING) -> Tensor:
    """KL(p ‖ q) in nats over the last dim, [..., K] -> [...], of additively smoothed distributions.

    Each side becomes (x + ε) / (1 + K ε) with ε = `smoothing`, so a component that one side gives 0 (an empty block,
    e.g. no tool definitions with tools off) cannot make the divergence infinite: KL <= log((1 + K ε) / ε).
    `smoothing = 0` is the plain KL (infinite where q = 0 < p). Inputs must already be distributions.
    """
    if p.shape != q.shape:
        raise ValueError(f"p and q must have the same shape, got {tuple(p.shape)} and {tuple(q.shape)}")
    if smoothing < 0:
        raise ValueError(f"kl smoothing must be >= 0, got {smoothing}")
    k = p.shape[-1]
    p = (p + smoothing) / (1 + k * smoothing)
    q = (q + smoothing) / (1 + k * smoothing)
    tiny = torch.finfo(p.dtype).tiny
    return torch.where(p > 0, p * (p.clamp_min(tiny).log() - q.log()), torch.zeros_like(p)).sum(dim=-1)


DIVERGENCES = {"jsd": jsd, "cosine": cosine_distance, "kl": kl}
BOUNDED_DIVERGENCES = ("jsd", "cosine")
"""Divergences in [0, 1]: the ones the `similarity` form (1 − D) accepts."""
FORMS = ("penalty", "similarity")
MISSING_TARGETS = ("zero", "exclude")


def align_distributions(student: dict[str, float], teacher: dict[str, float]) -> tuple[list[str], Tensor, Tensor]:
    """Put two {component key: score} dicts on one axis: (sorted union of keys, student dist [K], teacher dist [K]).

    A key missing on one side scores 0 there; each side is then normalised with `normalize` (all-zero -> uniform).
    """
    keys = sorted(set(student) | set(teacher))
    if not keys:
        raise ValueError("both attribution dicts are empty: nothing to align")
    p = torch.tensor([float(student.get(key, 0.0)) for key in keys])
    q = torch.tensor([float(teacher.get(key, 0.0)) for key in keys])
    return keys, normalize(p), normalize(q)


def attribution_divergence(
    student: dict[str, float], teacher: dict[str, float], divergence: str, kl_smoothing: float = DEFAULT_KL_SMOOTHING
) -> float:
    """D(student ‖ teacher) of two non-empty {component: score} dicts over the union of their keys."""
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence must be one of {sorted(DIVERGENCES)}, got {divergence!r}")
    _, p, q = align_distributions(student, teacher)
    if divergence == "kl":
        return float(kl(p, q, kl_smoothing))
    return float(DIVERGENCES[divergence](p, q))


def attribution_term(
    student: dict[str, float],
    teacher: dict[str, float],
    divergence: str,
    form: str,
    kl_smoothing: float = DEFAULT_KL_SMOOTHING,
) -> float:
    """The attribution term of one trajectory (weighted by λ in the reward): −D for `penalty`, 1 − D for
    `similarity` (which needs a divergence in [0, 1])."""
    check_form(divergence, form)
    value = attribution_divergence(student, teacher, divergence, kl_smoothing)
    return -value if form == "penalty" else 1.0 - value


def attribution_terms(
    student: list[dict[str, float]],
    teacher: list[dict[str, float]],
    divergence: str,
    form: str,
    missing_target: str = "zero",
    group_size: int = 1,
    kl_smoothing: float = DEFAULT_KL_SMOOTHING,
) -> tuple[Tensor, Tensor]:
    """The attribution terms of a batch of N trajectories in groups of `group_size` (prompt-major order).

    Returns (terms [N] float32, attributed [N] bool). A trajectory is attributed when both its dicts are non-empty;
    the others get 0 (`missing_target="zero"`) or the mean term of their group's attributed trajectories
    (`"exclude"`; 0 when none of the group is attributed).
    """
    if len(student) != len(teacher):
        raise ValueError(f"{len(student)} student and {len(teacher)} teacher attributions")
    if missing_target not in MISSING_TARGETS:
        raise ValueError(f"missing_target must be one of {list(MISSING_TARGETS)}, got {missing_target!r}")
    if group_size < 1 or len(student) % group_size:
        raise ValueError(f"{len(student)} trajectories do not split into groups of {group_size}")
    check_form(divergence, form)
    attributed = torch.tensor([bool(s) and bool(t) for s, t in zip(student, teacher, strict=True)], dtype=torch.bool)
    terms = torch.tensor(
        [
            attribution_term(s, t, divergence, form, kl_smoothing) if ok else 0.0
            for s, t, ok in zip(student, teacher, attributed.tolist(), strict=True)
        ],
        dtype=torch.float32,
    )
    if missing_target == "exclude":
        grouped, present = terms.view(-1, group_size), attributed.view(-1, group_size)
        means = grouped.sum(1) / present.sum(1).clamp_min(1)
        terms = torch.where(present, grouped, means[:, None]).flatten()
    return terms, attributed


def check_form(divergence: str, form: str) -> None:
    """One clear error for an unknown divergence or form, or a `similarity` form over an unbounded divergence."""
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence must be one of {sorted(DIVERGENCES)}, got {divergence!r}")
    if form not in FORMS:
        raise ValueError(f"attribution reward form must be one of {list(FORMS)}, got {form!r}")
    if form == "similarity" and divergence not in BOUNDED_DIVERGENCES:
        raise ValueError(
            f"the similarity form 1 − D needs a divergence in [0, 1] ({list(BOUNDED_DIVERGENCES)}), "
            f"got {divergence!r}: use form 'penalty' with it"
        )
