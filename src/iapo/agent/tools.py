"""Visual tools the agent can call, and a registry that runs them without ever raising.

`zoom_in` takes `bbox_2d = [x1, y1, x2, y2]` in pixel coordinates of the image *as the model sees it* (after the
processor's smart resize; Qwen2.5-VL's grounding convention), maps it back to the full-resolution original, clamps it
to the image, grows it to a minimum size around its centre, and returns the crop of the original, so zooming really
adds detail. Invalid calls return an error observation whose `error` names the kind; they are counted, not raised.

    result = run_tool(ToolCall("zoom_in", {"bbox_2d": [10, 10, 60, 60]}), ToolContext(image, model_size=(224, 224)))
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image


@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ToolContext:
    """What a tool may look at: the full-resolution original and its size as the model sees it, (height, width)."""

    image: Image.Image
    model_size: tuple[int, int]
    min_crop_size: int = 28


@dataclass
class ToolResult:
    """A tool's observation: an image (the crop) and/or a text; `error` is None on success, else its kind."""

    text: str
    image: Image.Image | None = None
    box: tuple[int, int, int, int] | None = None
    error: str | None = None


class ToolError(ValueError):
    """Raised inside a tool for a bad call; `kind` is the counted error name."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _as_box(value: Any) -> tuple[float, float, float, float]:
    if not isinstance(value, list | tuple) or len(value) != 4:
        raise ToolError("bad_arguments", "bbox_2d must be a list of four numbers [x1, y1, x2, y2]")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value):
        raise ToolError("bad_arguments", "bbox_2d must contain four finite numbers")
    return tuple(float(v) for v in value)  # type: ignore[return-value]


def model_box_to_original(
    box: tuple[float, float, float, float], model_size: tuple[int, int], original_size: tuple[int, int]
) -> tuple[int, int, int, int]:
    """Map a model-space box to the original image's pixel box (left, top, right, bottom), clamped to the image.

    `model_size` is (height, width) as the model sees it; `original_size` is PIL's (width, height).
    Raises ToolError for reversed, zero-area or fully outside boxes.
    """
    x1, y1, x2, y2 = box
    model_h, model_w = model_size
    width, height = original_size
    if x2 < x1 or y2 < y1:
        raise ToolError("reversed_bbox", "bbox_2d must satisfy x1 < x2 and y1 < y2")
    if x2 == x1 or y2 == y1:
        raise ToolError("degenerate_bbox", "bbox_2d has zero area")
    if x2 <= 0 or y2 <= 0 or x1 >= model_w or y1 >= model_h:
        raise ToolError("bbox_outside_image", f"bbox_2d lies outside the image of size {model_w}x{model_h}")
    sx, sy = width / model_w, height / model_h
    left = max(0, math.floor(x1 * sx))
    top = max(0, math.floor(y1 * sy))
    right = min(width, math.ceil(x2 * sx))
    bottom = min(height, math.ceil(y2 * sy))
    return left, top, right, bottom


def grow_to_min_size(box: tuple[int, int, int, int], min_size: int, image_size: tuple[int, int]):
    """Grow each side of a box shorter than `min_size` around its centre, shifting it to stay inside the image."""

    def grow(lo: int, hi: int, limit: int) -> tuple[int, int]:
        size = min(max(hi - lo, min_size), limit)
        start = (lo + hi) // 2 - size // 2
        start = min(max(start, 0), limit - size)
        return start, start + size

    left, right = grow(box[0], box[2], image_size[0])
    top, bottom = grow(box[1], box[3], image_size[1])
    return left, top, right, bottom


def zoom_in(call: ToolCall, context: ToolContext) -> ToolResult:
    """Crop the full-resolution original at a model-space `bbox_2d`."""
    if "bbox_2d" not in call.arguments:
        raise ToolError("missing_arguments", 'zoom_in needs "bbox_2d": [x1, y1, x2, y2]')
    box = model_box_to_original(_as_box(call.arguments["bbox_2d"]), context.model_size, context.image.size)
    box = grow_to_min_size(box, context.min_crop_size, context.image.size)
    return ToolResult(text="", image=context.image.crop(box), box=box)


TOOLS: dict[str, Callable[[ToolCall, ToolContext], ToolResult]] = {"zoom_in": zoom_in}
"""The tool registry: name -> callable(call, context) -> ToolResult. Add a tool by adding an entry."""


def run_tool(call: ToolCall, context: ToolContext, tools: dict | None = None) -> ToolResult:
    """Run a parsed call; every failure becomes an error observation (never an exception)."""
    registry = TOOLS if tools is None else tools
    if call.name not in registry:
        return ToolResult(
            text=f"Error: unknown tool {call.name!r}; available: {', '.join(sorted(registry))}.",
            error="unknown_tool",
        )
    try:
        return registry[call.name](call, context)
    except ToolError as err:
        return ToolResult(text=f"Error: {err}.", error=err.kind)
