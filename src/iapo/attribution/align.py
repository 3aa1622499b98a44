"""Compare two attribution distributions over the same named components (student vs teacher).

Attribution scores arrive as {component key: non-negative score} per model (keys such as `image/r0c1`, `crop/0`,
`question`). `align_distributions` puts both on the union of keys in sorted order and normalises each to a
distribution; `jsd` (base 2, in [0, 1]) or `cosine_distance` then measure how far apart they are, and IAPO's
alignment reward is 1 - divergence. All functions batch over leading dims; the last dim indexes components.

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


DIVERGENCES = {"jsd": jsd, "cosine": cosine_distance}


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
