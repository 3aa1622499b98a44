"""Log-probs and entropies of the policy's own tokens without a [batch, length, vocabulary] logits tensor.

The PPO update needs log p(x_t | x_<t) (and, for logging, the entropy of that distribution) only where the policy
wrote x_t: the policy mask, a small part of a multimodal trajectory (the prompt, hundreds of image tokens and the
tool observations are not the policy's actions). With Qwen2.5-VL's 151,936-row LM head, full logits cost
B × T × 151,936 floats per copy, and log-softmax, entropy and their gradients add several copies. Here the final
hidden states are gathered at the masked positions first, then sent through the LM head `chunk_size` positions at a
time (TRL's selective log-softmax idea); in training each chunk is recomputed in the backward pass
(non-reentrant checkpointing), so at most one chunk of logits is alive at any time, forward or backward.

Pure functions of tensors and the head (any callable mapping [K, H] -> [K, V], e.g. `model.lm_head`):

    hidden = backbone(**inputs).last_hidden_state                      # [B, T, H]
    logp, entropy = masked_logprobs(hidden, lm_head, input_ids, policy_mask, chunk_size=256, with_entropy=True)

Values equal `log_softmax(lm_head(hidden)).gather(input_ids)` at the masked positions (checked in
`tests/test_logprobs.py`); unmasked positions are 0.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

DEFAULT_CHUNK_SIZE = 256
"""Positions per LM-head chunk: a [256, 151,936] float32 tensor is 156 MB, and a chunk's forward and backward hold a
few of them (measured with `python -m iapo.experiments.update_memory --logit-chunk-size N`: 128 / 256 / 512 → 0.6 /
0.8 / 1.3 GB above the model on the CPU)."""


def _chunk_logprobs(
    hidden: Tensor, targets: Tensor, head: Callable[[Tensor], Tensor], with_entropy: bool
) -> tuple[Tensor, Tensor]:
    """log p(target) [k] and entropy [k] (detached; empty when not asked for) of one chunk, in float32.

    The entropy is `algo.token_entropy_from_logits` computed from the log-softmax already at hand."""
    logp = torch.log_softmax(head(hidden).float(), dim=-1)
    selected = logp.gather(-1, targets[:, None]).squeeze(-1)
    if not with_entropy:
        return selected, selected.new_empty(0)
    with torch.no_grad():  # in place: one more [k, V] tensor, not four
        plogp = logp.exp().mul_(logp).masked_fill_(torch.isneginf(logp), 0.0)  # 0 · log 0 = 0 for banned tokens
        entropy = -plogp.sum(dim=-1)
    return selected, entropy


def selective_logprobs(
    hidden: Tensor,
    head: Callable[[Tensor], Tensor],
    targets: Tensor,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    with_entropy: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Log-probs [K] of `targets` [K] under `head(hidden)` for hidden states [K, H], and entropies [K] or None.

    Log-probs are float32 and carry gradients to `hidden` and the head's parameters; entropies are detached. When
    gradients are needed, each chunk's logits are recomputed in the backward pass instead of being kept.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if hidden.dim() != 2 or targets.shape != hidden.shape[:1]:
        raise ValueError(f"need hidden [K, H] and targets [K], got {tuple(hidden.shape)} and {tuple(targets.shape)}")
    head_parameters = head.parameters() if isinstance(head, torch.nn.Module) else ()
    differentiable = torch.is_grad_enabled() and (hidden.requires_grad or any(p.requires_grad for p in head_parameters))
    logps, entropies = [], []
    for start in range(0, hidden.shape[0], chunk_size):
        piece = (hidden[start : start + chunk_size], targets[start : start + chunk_size], head, with_entropy)
        if differentiable:
            logp, entropy = checkpoint(_chunk_logprobs, *piece, use_reentrant=False)
        else:
            logp, entropy = _chunk_logprobs(*piece)
        logps.append(logp)
        entropies.append(entropy)
    if not logps:
        empty = hidden.new_zeros(0, dtype=torch.float32)
        return empty, (empty if with_entropy else None)
    return torch.cat(logps), (torch.cat(entropies) if with_entropy else None)


def masked_logprobs(
    hidden: Tensor,
    head: Callable[[Tensor], Tensor],
    input_ids: Tensor,
    mask: Tensor,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    with_entropy: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Per-token log-probs [B, T] (float32, 0 where `mask` is not set) of a batch whose final hidden states are
    `hidden` [B, T, H]; token t is predicted by the hidden state at t − 1, so position 0 is never scored.

    Returns (logp, entropy): entropy [B, T] of the next-token distribution at the same positions (detached, 0
    elsewhere), or None unless `with_entropy`.
    """
    if hidden.shape[:2] != input_ids.shape or mask.shape != input_ids.shape:
        raise ValueError(
            f"hidden [B, T, H], input_ids and mask [B, T] must agree, got {tuple(hidden.shape)}, "
            f"{tuple(input_ids.shape)}, {tuple(mask.shape)}"
        )
    predicting = mask[:, 1:].to(hidden.device, torch.bool)
    scored = torch.cat([torch.zeros_like(predicting[:, :1]), predicting], dim=1)
    logp, entropy = selective_logprobs(
        hidden[:, :-1][predicting], head, input_ids.to(hidden.device)[:, 1:][predicting], chunk_size, with_entropy
    )
    out = torch.zeros(input_ids.shape, dtype=torch.float32, device=hidden.device)
    out = out.masked_scatter(scored, logp)
    if entropy is None:
        return out, None
    return out, torch.zeros_like(out).masked_scatter(scored, entropy)
