"""The policy update: μ epochs of PPO-clip over mini-batches of trajectories, KL to the adapter-free reference.

Plain torch around `algo.py`, no Lightning: the LightningModule passes its `manual_backward` and optimizer, tests pass
`Tensor.backward` and a bare optimizer.

    stats = policy_update(model, optimizer, trajectories, advantages, PPOSettings(), pad_token_id=pad)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from iapo.agent.trajectory import Trajectory, collate_trajectories, device_inputs
from iapo.agent.vision import distinct_image_features, encoder_outputs, vision_language_model
from iapo.training.algo import aggregate, kl_k3, ppo_clip_loss
from iapo.training.logprobs import DEFAULT_CHUNK_SIZE, masked_logprobs


@dataclass
class PPOSettings:
    """Knobs of the update (docs/method.md, "Update")."""

    epochs: int = 1
    mini_batch_size: int = 8
    eps_low: float = 0.2
    eps_high: float = 0.28
    kl_beta: float = 0.0
    log_kl: bool = True
    aggregation: str = "token-mean"
    max_grad_norm: float = 1.0
    logit_chunk_size: int = DEFAULT_CHUNK_SIZE


def backbone_and_head(model) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The module that yields a causal LM's final hidden states (`.model` of a transformers `*ForCausalLM` /
    `*ForConditionalGeneration`, LoRA layers included) and its LM head, through a peft wrapper."""
    core = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone, head = getattr(core, "model", None), core.get_output_embeddings()
    if not isinstance(backbone, torch.nn.Module) or head is None:
        raise TypeError(f"{type(core).__name__} has no `.model` backbone and output embeddings to score tokens with")
    return backbone, head


def policy_forward(
    model, batch: dict[str, torch.Tensor], chunk_size: int = DEFAULT_CHUNK_SIZE, with_entropy: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log-probs [B, T] (with grad) and entropies [B, T] (detached; None unless `with_entropy`) of a
    collated batch, at its `policy_mask` positions only (0 elsewhere).

    The LM head runs on the masked positions alone, `chunk_size` at a time (`iapo.training.logprobs`): memory does
    not grow with vocabulary × sequence length. With the vision tower frozen (LoRA leaves it out), each distinct image
    of the batch goes through it once, without a graph (exact: no gradient flows into a frozen tower).
    """
    inputs = device_inputs(model, batch)
    backbone, head = backbone_and_head(model)
    visual_frozen = not any(p.requires_grad for p in vision_language_model(model).visual.parameters())
    if visual_frozen and inputs.get("pixel_values") is not None:
        with torch.no_grad():
            features = distinct_image_features(model, inputs.pop("pixel_values"), inputs["image_grid_thw"])
        inputs["mm_encoder_outputs"] = encoder_outputs(features)
    hidden = backbone(**inputs, use_cache=False).last_hidden_state
    return masked_logprobs(hidden, head, inputs["input_ids"], batch["policy_mask"], chunk_size, with_entropy)


def reference_adapter_off(model):
    """Context in which `model` is the reference: its LoRA adapter disabled (no second copy of the weights)."""
    if hasattr(model, "disable_adapter"):
        return model.disable_adapter()
    raise ValueError("KL to the reference needs a LoRA (peft) student: set `student.lora` or `kl_beta: 0`")


@torch.no_grad()
def score_logprobs(
    model, trajectories: list[Trajectory], pad_token_id: int, size: int, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> list[torch.Tensor]:
    """Log-probs of each trajectory's policy tokens (unpadded, 0 off the policy mask, on CPU), in chunks of `size`
    trajectories."""
    out = []
    for start in range(0, len(trajectories), size):
        chunk = trajectories[start : start + size]
        batch = collate_trajectories(chunk, pad_token_id)
        logp, _ = policy_forward(model, batch, chunk_size, with_entropy=False)
        for row, t in enumerate(chunk):
            out.append(logp[row, logp.shape[1] - t.input_ids.shape[0] :].float().cpu())
    return out


def finite_on_every_process(loss: torch.Tensor) -> bool:
    """Whether `loss` is finite here and, under torch.distributed (Lightning's DDP), on every other process too.

    Each backward pass under DDP all-reduces the gradients, so all processes must skip the same mini-batches: one
    that skipped alone would leave the others waiting in the all-reduce. The gradient-norm check needs no vote, as
    the norms are computed from the already all-reduced gradients.
    """
    finite = torch.isfinite(loss.detach()).to(torch.float32).reshape(1)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
    return bool(finite.item())


def _pad_left(rows: list[torch.Tensor], length: int) -> torch.Tensor:
    out = torch.zeros(len(rows), length)
    for i, row in enumerate(rows):
        out[i, length - row.shape[0] :] = row
    return out


def policy_update(
    model,
    optimizer: torch.optim.Optimizer,
    trajectories: list[Trajectory],
    advantages: torch.Tensor,
    settings: PPOSettings,
    pad_token_id: int,
    backward: Callable[[torch.Tensor], None] = torch.Tensor.backward,
    on_step: Callable[[], None] | None = None,
    generator: torch.Generator | None = None,
    auxiliary_loss: Callable[[list[int]], torch.Tensor | None] | None = None,
) -> dict[str, float]:
    """Run the PPO-clip update and return averaged statistics.

    `auxiliary_loss`, when given, maps a mini-batch's trajectory indices to a loss added to its PPO loss (or None:
    nothing added); its mean over the mini-batches that had one is `auxiliary_loss` (the attribution loss,
    `alignment.alignment_loss`).

    Old log-probs come from the policy before the update; reference log-probs (when `kl_beta > 0`, or for the `kl`
    statistic alone when `log_kl`) from the same model with its adapter disabled. A mini-batch whose loss or gradient norm is not finite is skipped (optimizer
    not stepped, gradients dropped) and counted in `skipped_nonfinite`.
    """
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("the policy has no trainable parameters: set `student.lora` (or unfreeze the model)")
    was_training = model.training
    model.eval()
    old = score_logprobs(model, trajectories, pad_token_id, settings.mini_batch_size, settings.logit_chunk_size)
    ref = None
    if settings.kl_beta > 0 or (settings.log_kl and hasattr(model, "disable_adapter")):
        with reference_adapter_off(model):
            ref = score_logprobs(model, trajectories, pad_token_id, settings.mini_batch_size, settings.logit_chunk_size)
    model.train()  # gradient checkpointing is active only in train mode; keep LoRA dropout at 0 for RL
    totals: dict[str, float] = {}
    auxiliary: list[float] = []
    steps = skipped = 0
    for _ in range(settings.epochs):
        order = torch.randperm(len(trajectories), generator=generator).tolist()
        for start in range(0, len(order), settings.mini_batch_size):
            index = order[start : start + settings.mini_batch_size]
            chunk = [trajectories[i] for i in index]
            batch = collate_trajectories(chunk, pad_token_id)
            length = batch["input_ids"].shape[1]
            logp, entropy = policy_forward(model, batch, settings.logit_chunk_size)
            mask = batch["policy_mask"].to(logp.device)
            old_logp = _pad_left([old[i] for i in index], length).to(logp.device)
            loss, stats = ppo_clip_loss(
                logp,
                old_logp,
                advantages[index].to(logp.device),
                mask,
                settings.eps_low,
                settings.eps_high,
                settings.aggregation,
            )
            if ref is not None:
                ref_logp = _pad_left([ref[i] for i in index], length).to(logp.device)
                kl = aggregate(kl_k3(logp, ref_logp), mask, settings.aggregation)
                if settings.kl_beta > 0:
                    loss = loss + settings.kl_beta * kl
                stats["kl"] = kl.detach()
            if auxiliary_loss is not None and (extra := auxiliary_loss(index)) is not None:
                loss = loss + extra
                auxiliary.append(float(extra.detach()))
            optimizer.zero_grad(set_to_none=True)
            if not finite_on_every_process(loss):
                skipped += 1
                continue
            backward(loss)
            grad_norm = torch.nn.utils.clip_grad_norm_(trainable, settings.max_grad_norm)
            if not math.isfinite(float(grad_norm)):
                optimizer.zero_grad(set_to_none=True)
                skipped += 1
                continue
            optimizer.step()
            if on_step is not None:
                on_step()
            steps += 1
            stats.update(
                loss=loss.detach(), grad_norm=grad_norm, entropy=(entropy * mask).sum() / mask.sum().clamp(min=1)
            )
            for key, value in stats.items():
                totals[key] = totals.get(key, 0.0) + float(value)
    model.train(was_training)
    result = {key: value / max(steps, 1) for key, value in totals.items()}
    result["skipped_nonfinite"] = float(skipped)
    result["optimizer_steps"] = float(steps)
    if auxiliary:
        result["auxiliary_loss"] = sum(auxiliary) / len(auxiliary)
    return result
