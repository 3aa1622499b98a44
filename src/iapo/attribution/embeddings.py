"""The language model's input embeddings and forwards from them: the plumbing every attribution method stands on.

- `language_model_inputs`: the embeddings [B, T, D] the language model receives (image features scattered in) and
  their mRoPE position ids, read by a forward pre-hook so the vision tower runs once and is never back-propagated;
- `forward_from_embeddings`: the model run with those embeddings replaced (no pixels, positions from the ids);
- `target_logprob_fn`: the objective log p(target) as a function of the embeddings (logits at the predicting
  positions only);
- `select_rows`: some rows of a batch (repeats allowed) for the forwards of integrated gradients' points;
- `through_last_target`: a batch cut after each row's last target token (exact for every method);
- `attribution_mode`: eval mode (no dropout) while checkpointed layers keep checkpointing.

Run the checks with `python -m pytest tests/test_attribution.py tests/test_ig.py -q`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from transformers.modeling_layers import GradientCheckpointingLayer

from iapo.agent.vision import distinct_image_features, encoder_outputs


def language_model(model) -> nn.Module:
    """The decoder that receives `inputs_embeds` (`model.model.language_model`), through a peft wrapper too."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    inner = getattr(base, "model", None)
    decoder = getattr(inner, "language_model", None)
    if not isinstance(decoder, nn.Module):
        raise TypeError(
            f"{type(base).__name__} has no `.model.language_model`; attribution needs a Qwen2.5-VL-style model"
        )
    return decoder


class _EmbeddingsReady(Exception):
    def __init__(self, embeddings: Tensor, positions: Tensor | None) -> None:
        super().__init__("input embeddings captured")
        self.embeddings = embeddings
        self.positions = positions


def language_model_inputs(
    model, inputs: dict[str, Tensor], distinct_images: bool = True
) -> tuple[Tensor, Tensor | None]:
    """(input embeddings [B, T, D] with image features scattered in, mRoPE position ids [3, B, T]), no grad.

    Runs the model only up to the language model: the embedding lookup, the vision tower (once per distinct image of
    the batch with `distinct_images`, else once per image) and the position ids.
    """

    def stop(module, args, kwargs):
        positions = kwargs.get("position_ids")
        raise _EmbeddingsReady(kwargs["inputs_embeds"].detach(), None if positions is None else positions.detach())

    if distinct_images and inputs.get("pixel_values") is not None:
        # each distinct image through the vision tower once (a group's trajectories share their original image)
        features = distinct_image_features(model, inputs["pixel_values"], inputs["image_grid_thw"])
        inputs = {key: value for key, value in inputs.items() if key != "pixel_values"}
        inputs["mm_encoder_outputs"] = encoder_outputs(features)
    handle = language_model(model).register_forward_pre_hook(stop, with_kwargs=True)
    try:
        with torch.no_grad():
            model(**inputs, use_cache=False)
    except _EmbeddingsReady as ready:
        return ready.embeddings, ready.positions
    finally:
        handle.remove()
    raise RuntimeError("the model never called its language model")


ROW_INPUTS = ("input_ids", "attention_mask", "mm_token_type_ids")


def select_rows(inputs: dict[str, Tensor], rows: Tensor) -> dict[str, Tensor]:
    """Model inputs of batch rows `rows` (repeats allowed) for `forward_from_embeddings`: token ids, attention mask,
    token types and the explicit mRoPE `position_ids` [3, B, T] (which replace the images' grids)."""
    if inputs.get("position_ids") is None:
        raise ValueError("selecting rows needs explicit position_ids (from language_model_inputs)")
    selected = {key: inputs[key][rows] for key in ROW_INPUTS if key in inputs}
    selected["position_ids"] = inputs["position_ids"][:, rows]
    return selected


def forward_from_embeddings(model, inputs: dict[str, Tensor], embeddings: Tensor, **kwargs):
    """Run the model with the language model's `inputs_embeds` replaced by `embeddings` [B, T, D].

    The vision tower is skipped (no pixels are passed); mRoPE positions still come from `input_ids`,
    `mm_token_type_ids`, `image_grid_thw` and the attention mask.
    """

    def replace(module, args, hook_kwargs):
        hook_kwargs["inputs_embeds"] = embeddings
        return args, hook_kwargs

    text_inputs = {k: v for k, v in inputs.items() if k != "pixel_values"}
    handle = language_model(model).register_forward_pre_hook(replace, with_kwargs=True)
    try:
        return model(**text_inputs, use_cache=False, **kwargs)
    finally:
        handle.remove()


def target_logprob_fn(model, inputs: dict[str, Tensor], targets: Tensor) -> Callable[[Tensor], Tensor]:
    """objective(embeddings [B, T, D]) -> [B]: Σ over target tokens t of log p(x_t | x_<t) (logits at t − 1 only)."""
    predicting = torch.zeros_like(targets)
    predicting[:, :-1] = targets[:, 1:]
    rows = torch.nonzero(predicting)[:, 0]
    next_ids = inputs["input_ids"][:, 1:][targets[:, 1:]]

    def objective(embeddings: Tensor) -> Tensor:
        logits = forward_from_embeddings(model, inputs, embeddings, logits_to_keep=predicting).logits
        logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, next_ids[:, None]).squeeze(-1)
        return torch.zeros(targets.shape[0], device=logp.device).index_add(0, rows, logp)

    return objective


def through_last_target(
    inputs: dict[str, Tensor], embeddings: Tensor, masks: Tensor, targets: Tensor, pad_token_id: int
) -> tuple[dict[str, Tensor], Tensor, Tensor, Tensor]:
    """The batch cut after each row's last target token and left-padded again to the longest kept row.

    Exact: log p(target) is read at positions before the last target token, which (causal attention) see no later
    token, so the gradient, occlusion drop and attention mass of every later token are 0 and the earlier tokens'
    are unchanged. The tool-call target of a multi-turn trajectory then skips the returned image and the later turns.

    Args:
        inputs: `ROW_INPUTS` [B, T] and `position_ids` [3, B, T] of a left-padded batch.
        embeddings: [B, T, D]; masks: [B, K, T]; targets: [B, T] (every row has a target token).
    """
    rows, length = targets.shape
    positions = torch.arange(length, device=targets.device)
    starts = (inputs["attention_mask"].bool().float().argmax(-1)).to(targets.device)  # first real token of each row
    ends = torch.where(targets, positions, -1).max(-1).values + 1
    kept = int((ends - starts).max())
    if kept == length:
        return inputs, embeddings, masks, targets
    # row b keeps columns [ends_b − kept, ends_b); those before its first real token become padding
    source = ends[:, None] - kept + torch.arange(kept, device=targets.device)
    real = source >= starts[:, None]
    batch_rows = torch.arange(rows, device=targets.device)[:, None]

    def take(tensor: Tensor, pad) -> Tensor:
        """[B, T, ...] -> [B, kept, ...]."""
        gathered = tensor[batch_rows, source.clamp_min(0)]
        keep = real.view(rows, kept, *[1] * (tensor.dim() - 2))
        return torch.where(keep, gathered, torch.as_tensor(pad, dtype=tensor.dtype, device=tensor.device))

    cut = {key: take(inputs[key], pad_token_id if key == "input_ids" else 0) for key in ROW_INPUTS if key in inputs}
    cut["position_ids"] = take(inputs["position_ids"].permute(1, 2, 0), 0).permute(2, 0, 1).contiguous()
    cut_masks = take(masks.transpose(1, 2), False).transpose(1, 2).contiguous()
    return cut, take(embeddings, 0.0), cut_masks, take(targets, False)


@contextmanager
def attribution_mode(model: nn.Module, checkpoint: bool = True) -> Iterator[None]:
    """Eval mode (no dropout) while gradient-checkpointed layers keep checkpointing (unless `checkpoint` is False);
    restores every module's flag.

    transformers checkpoints a layer only when the layer itself is in training mode, so those layers (not their
    submodules) get `training = True`; checkpointing then bounds the memory of the backward of `grad_x_input`.
    Scores that keep their graph for a loss need `checkpoint=False`: the loss is back-propagated later, outside this
    mode, where a recomputed layer would run in training mode (dropout) and on another attention kernel than its
    forward did (torch's CheckpointError).
    """
    flags = {module: module.training for module in model.modules()}
    model.eval()
    for module in model.modules():
        if isinstance(module, GradientCheckpointingLayer) and module.gradient_checkpointing and checkpoint:
            module.training = True
    try:
        yield
    finally:
        for module, flag in flags.items():
            module.training = flag
