"""RL maths for GRPO / IAPO on plain tensors: advantages, PPO-clip loss, k3 KL, loss aggregation, entropy, rewards.

No models, no Lightning: every function maps tensors to tensors, so the update step in `training/step.py` reads as

    adv = group_advantages(combine_rewards(components, weights), group_size=G)
    loss, stats = ppo_clip_loss(logp, old_logp, adv, mask, eps_low, eps_high, aggregation)
    loss = loss + beta * aggregate(kl_k3(logp, ref_logp), mask, aggregation)

Shapes: N trajectories (prompt-major: the G samples of prompt 0, then prompt 1, ...), T completion tokens.
`mask` is [N, T], bool or 0/1 float, 1 for tokens the policy generated (tool observations and padding are 0).
Values at masked-out positions never reach a returned value, but their gradients are only clean if they are finite.

Run the checks with `python -m pytest tests/test_algo.py -q`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import Tensor

AGGREGATIONS = ("token-mean", "sequence-mean", "dr-grpo")
STD_EPS = 1e-6

AdvantageScale = Callable[[Tensor, Tensor], Tensor]
"""`scale(centered, rewards) -> advantages`: `centered` is [P, G] (each group minus its mean), `rewards` the [N]
batch they come from; returns [P, G]."""

ADVANTAGE_SCALES: dict[str, AdvantageScale] = {}
"""name -> scale, filled by `register_advantage_scale` (the value of `model.advantage_scale`)."""


def register_advantage_scale(name: str) -> Callable[[AdvantageScale], AdvantageScale]:
    """Decorator: make `scale(centered, rewards)` selectable as `model.advantage_scale: <name>` (as verl's
    `register_adv_est`). A second scale with the same name is an error."""

    def add(scale: AdvantageScale) -> AdvantageScale:
        if name in ADVANTAGE_SCALES:
            raise ValueError(f"advantage scale {name!r} is registered twice")
        ADVANTAGE_SCALES[name] = scale
        return scale

    return add


def get_advantage_scale(name: str) -> AdvantageScale:
    """The registered scale `name`; an unknown name is a ValueError that lists the registered ones."""
    if name not in ADVANTAGE_SCALES:
        raise ValueError(f"unknown advantage scale {name!r}; registered: {', '.join(sorted(ADVANTAGE_SCALES))}")
    return ADVANTAGE_SCALES[name]


def _unbiased_std(x: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor:
    """Bessel-corrected std (torch's default, as TRL's GRPO trainer); 0 for a single sample instead of NaN."""
    count = x.numel() if dim is None else x.shape[dim]
    if dim is None:
        return x.std(correction=int(count > 1))
    return x.std(dim=dim, keepdim=keepdim, correction=int(count > 1))


@register_advantage_scale("group")
def _group_scale(centered: Tensor, rewards: Tensor) -> Tensor:
    """GRPO: divide by the group's std + 1e-6."""
    groups = rewards.reshape(centered.shape)
    return centered / (_unbiased_std(groups, dim=1, keepdim=True) + STD_EPS)


@register_advantage_scale("batch")
def _batch_scale(centered: Tensor, rewards: Tensor) -> Tensor:
    """Divide by the whole batch's std + 1e-6 (REINFORCE++-style; less noisy with small groups)."""
    return centered / (_unbiased_std(rewards) + STD_EPS)


@register_advantage_scale("none")
def _no_scale(centered: Tensor, rewards: Tensor) -> Tensor:
    """The centred rewards as they are (Dr. GRPO)."""
    return centered


def group_advantages(rewards: Tensor, group_size: int, scale: str = "group") -> Tensor:
    """Group-relative advantages, [N] -> [N].

    `rewards` is prompt-major: entries [i*G, (i+1)*G) are the G samples of prompt i. Every scale subtracts the group
    mean, then the registered `scale` divides (built in: "group" by the group std + 1e-6, "batch" by the std of the
    whole batch + 1e-6, "none" by nothing). Stds are unbiased (Bessel-corrected, torch's default, as TRL's GRPO
    trainer); with a single sample they are 0. A group whose rewards are all equal gets exactly 0 advantages,
    whatever the scale.
    """
    scale_fn = get_advantage_scale(scale)
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D [N], got shape {tuple(rewards.shape)}")
    if group_size < 1 or rewards.numel() % group_size != 0:
        raise ValueError(f"{rewards.numel()} rewards cannot be split into groups of group_size={group_size}")
    rewards = rewards if rewards.is_floating_point() else rewards.float()
    groups = rewards.reshape(-1, group_size)
    centered = scale_fn(groups - groups.mean(dim=1, keepdim=True), rewards)
    constant = groups.amax(dim=1, keepdim=True) == groups.amin(dim=1, keepdim=True)
    return torch.where(constant, torch.zeros_like(centered), centered).reshape(-1)


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of `x` over positions where `mask` is set, along `dim` (all positions if None); 0 where none is set.

    `x` and `mask` have the same shape; the result drops `dim` (a scalar for dim=None).
    """
    keep = mask.bool()
    total = x.masked_fill(~keep, 0).sum(dim=dim)
    count = keep.sum(dim=dim).clamp(min=1)
    return total / count


def aggregate(
    per_token: Tensor, mask: Tensor, aggregation: str = "token-mean", max_tokens: int | None = None
) -> Tensor:
    """Reduce a per-token loss [N, T] to a scalar over the masked tokens.

    - "token-mean": sum over all masked tokens / number of masked tokens in the batch (DAPO).
    - "sequence-mean": mean over the masked tokens of each sequence, then mean over all N sequences; a sequence with
      no masked token counts as 0 (original GRPO; TRL's "grpo" loss).
    - "dr-grpo": sum over masked tokens / (N * max_tokens), max_tokens a constant (default T), so the gradient scale
      does not depend on response lengths (Dr. GRPO).
    A batch without any masked token gives 0, never NaN.
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown loss aggregation {aggregation!r}; expected one of {AGGREGATIONS}")
    if per_token.dim() != 2 or per_token.shape != mask.shape:
        raise ValueError(
            f"per_token and mask must both be [N, T], got {tuple(per_token.shape)} and {tuple(mask.shape)}"
        )
    if aggregation == "token-mean":
        return masked_mean(per_token, mask)
    if aggregation == "sequence-mean":
        return masked_mean(per_token, mask, dim=1).mean()
    n, t = per_token.shape
    max_tokens = t if max_tokens is None else max_tokens
    if max_tokens <= 0:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    return per_token.masked_fill(~mask.bool(), 0).sum() / (n * max_tokens)


def ppo_clip_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    aggregation: str = "token-mean",
    max_tokens: int | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Token-level PPO-clip policy loss and its statistics.

    logp, old_logp, mask: [N, T]; advantages: [N] (one per trajectory, shared by its tokens).
    Per token: -min(r * A, clip(r, 1 - eps_low, 1 + eps_high) * A) with r = exp(logp - old_logp), reduced by
    `aggregate`. `old_logp` and `advantages` are constants (detached here). Returns (scalar loss, stats) where the
    detached scalar stats are, over masked tokens: `clip_ratio` (fraction where the clipped branch is active, so the
    token has no gradient), `clip_ratio_low` (r < 1 - eps_low with A < 0), `clip_ratio_high` (r > 1 + eps_high
    with A > 0), `ratio_mean` and `ratio_max`.
    """
    if not 0 <= eps_low < 1 or eps_high < 0:
        raise ValueError(f"need 0 <= eps_low < 1 and eps_high >= 0, got eps_low={eps_low}, eps_high={eps_high}")
    if logp.dim() != 2 or logp.shape != old_logp.shape or logp.shape != mask.shape:
        raise ValueError(
            f"logp, old_logp and mask must all be [N, T], got {tuple(logp.shape)}, {tuple(old_logp.shape)}, "
            f"{tuple(mask.shape)}"
        )
    if advantages.shape != logp.shape[:1]:
        raise ValueError(f"advantages must be [N]={tuple(logp.shape[:1])}, got {tuple(advantages.shape)}")
    keep = mask.bool()
    adv = advantages.detach().to(logp.dtype).unsqueeze(1)
    log_ratio = torch.where(keep, logp - old_logp.detach(), torch.zeros_like(logp))
    ratio = torch.exp(log_ratio)
    clipped_ratio = ratio.clamp(1 - eps_low, 1 + eps_high)
    per_token = -torch.minimum(ratio * adv, clipped_ratio * adv)
    loss = aggregate(per_token, keep, aggregation, max_tokens)

    with torch.no_grad():
        clipped_low = (ratio < 1 - eps_low) & (adv < 0)
        clipped_high = (ratio > 1 + eps_high) & (adv > 0)
        stats = {
            "clip_ratio": masked_mean((clipped_low | clipped_high).float(), keep),
            "clip_ratio_low": masked_mean(clipped_low.float(), keep),
            "clip_ratio_high": masked_mean(clipped_high.float(), keep),
            "ratio_mean": masked_mean(ratio, keep),
            "ratio_max": ratio.masked_fill(~keep, 0).max(),
        }
    return loss, stats


def kl_k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Per-token k3 estimate of KL(pi || ref) for tokens sampled from pi: exp(d) - d - 1 with d = ref_logp - logp.

    Any shape in, same shape out; unbiased, and >= 0 everywhere (computed as expm1(d) - d, which also keeps it exact
    near d = 0). `ref_logp` is usually computed without grad; gradients flow through `logp`.
    """
    d = ref_logp - logp
    return torch.expm1(d) - d


def token_entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy (nats) of the next-token distribution, [..., V] -> [...]; -inf logits (banned tokens) contribute 0."""
    logp = torch.log_softmax(logits, dim=-1)
    p = logp.exp()
    return -torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(dim=-1)


def combine_rewards(components: dict[str, Tensor], weights: dict[str, float]) -> Tensor:
    """Total reward sum_k weights[k] * components[k], each component [N] -> [N] (float).

    Components without a weight are not summed (they can still be logged). Every weight key must name a component;
    a missing one raises ValueError naming it.
    """
    if not weights:
        raise ValueError("weights is empty: give at least one reward component a weight")
    missing = sorted(set(weights) - set(components))
    if missing:
        raise ValueError(f"reward weight(s) {missing} have no reward component; components are {sorted(components)}")
    shapes = {key: tuple(components[key].shape) for key in weights}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"weighted reward components must share one shape, got {shapes}")
    dtype = functools.reduce(torch.promote_types, (components[key].dtype for key in weights), torch.get_default_dtype())
    total = torch.zeros(next(iter(shapes.values())), dtype=dtype, device=components[next(iter(weights))].device)
    for key, weight in weights.items():
        total = total + weight * components[key].to(dtype)
    return total
