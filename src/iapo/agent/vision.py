"""Vision-tower features of a Qwen2.5-VL model, each distinct image encoded once.

A group's G trajectories share their original image, and the model's own forward encodes every image of a batch:
G passes of the tower for one picture. Here the images of a batch are told apart by content (equal processor grids
and bit-equal pixel rows: the same picture through the same processor), each distinct one goes through the tower
once, and the model receives the features as `mm_encoder_outputs`, which it scatters into the image placeholders
exactly as it does its own. The tower attends within each image only (block-diagonal windows), so an image's
features do not depend on which other images share the pass.

    features = distinct_image_features(model, batch["pixel_values"], batch["image_grid_thw"])
    logits = model(**text_inputs, mm_encoder_outputs=encoder_outputs(features)).logits

Run the checks with `python -m pytest tests/test_attribution_fast.py tests/test_cached_generation.py -q`.
"""

from __future__ import annotations

import torch
from torch import Tensor
from transformers.modeling_outputs import BaseModelOutputWithPooling


def vision_language_model(model):
    """The Qwen2.5-VL `Model` (vision tower, `get_image_features`, `get_rope_index`) of a `*ForConditionalGeneration`,
    through a peft wrapper too."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    inner = getattr(base, "model", None)
    if inner is None or not hasattr(inner, "get_rope_index") or not hasattr(inner, "get_image_features"):
        raise TypeError(f"{type(base).__name__} is not a Qwen2.5-VL-style model (no get_rope_index/get_image_features)")
    return inner


def encode_images(model, pixel_values: list[Tensor], grids: list[Tensor]) -> list[Tensor]:
    """Features [tokens_k, D] of each image k (its processor rows [P_k, C] and grid [1, 3]), in one tower pass."""
    if not pixel_values:
        return []
    device = next(model.parameters()).device
    pixels = torch.cat(pixel_values).to(device, model.dtype)
    grid = torch.cat(grids).to(device)
    return list(vision_language_model(model).get_image_features(pixels, grid).pooler_output)


def split_images(pixel_values: Tensor, grids: Tensor) -> list[Tensor]:
    """The processor rows of each image of a batch ([P, C] split by the patch count t·h·w of each grid)."""
    return list(torch.split(pixel_values, grids.prod(-1).tolist()))


def distinct_image_features(model, pixel_values: Tensor, grids: Tensor) -> list[Tensor]:
    """Features of every image of a batch, in order, computed once per distinct image (equal grid and pixels)."""
    images = split_images(pixel_values, grids)
    distinct: list[int] = []  # image index of each distinct image
    source: list[int] = []  # position in `distinct` of each image
    for k, pixels in enumerate(images):
        match = next(
            (
                d
                for d, first in enumerate(distinct)
                if torch.equal(grids[first], grids[k]) and torch.equal(images[first], pixels)
            ),
            None,
        )
        if match is None:
            distinct.append(k)
            match = len(distinct) - 1
        source.append(match)
    features = encode_images(model, [images[k] for k in distinct], [grids[k : k + 1] for k in distinct])
    return [features[d] for d in source]


def encoder_outputs(features: list[Tensor]) -> dict[str, BaseModelOutputWithPooling]:
    """`mm_encoder_outputs` for a model call: image features in placeholder order (batch row, then position)."""
    return {"image": BaseModelOutputWithPooling(pooler_output=[torch.cat(features)])}
