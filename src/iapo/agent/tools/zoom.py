"""The zoom setting's tool: `zoom_in` crops the full-resolution original at a box the model gives.

`bbox_2d = [x1, y1, x2, y2]` is in pixel coordinates of the image *as the model sees it* (after the processor's smart
resize; Qwen2.5-VL's grounding convention). The box is mapped back to the full-resolution original, clamped to the
image, grown to a minimum size around its centre, and the crop of the original is returned, so zooming really adds
detail. Invalid calls raise `ToolError` with a counted kind (the registry turns it into an error observation).

    run_tool(ToolCall("zoom_in", {"bbox_2d": [10, 10, 60, 60]}), ToolContext(image, model_size=(224, 224)), "zoom")
"""

from __future__ import annotations

import math
from typing import Any

from iapo.agent.tools.registry import Tool, ToolContext, ToolError, ToolResult, Toolset, register_tool, register_toolset


def _finite_float(value: Any) -> float | None:
    """`value` as a finite float, or None: booleans, non-numbers, inf / nan and integers too large for a float."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _as_box(value: Any) -> tuple[float, float, float, float]:
    if not isinstance(value, list | tuple) or len(value) != 4:
        raise ToolError("bad_arguments", "bbox_2d must be a list of four numbers [x1, y1, x2, y2]")
    box = tuple(_finite_float(v) for v in value)
    if None in box:
        raise ToolError("bad_arguments", "bbox_2d must contain four finite numbers")
    return box  # type: ignore[return-value]


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
    # clamp in model space first: a finite but huge coordinate (1e308) would overflow once scaled
    x1, x2 = max(x1, 0.0), min(x2, float(model_w))
    y1, y2 = max(y1, 0.0), min(y2, float(model_h))
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


def zoom_in(arguments: dict[str, Any], context: ToolContext) -> ToolResult:
    """Crop the full-resolution original at a model-space `bbox_2d`."""
    if "bbox_2d" not in arguments:
        raise ToolError("missing_arguments", 'zoom_in needs "bbox_2d": [x1, y1, x2, y2]')
    box = model_box_to_original(_as_box(arguments["bbox_2d"]), context.model_size, context.image.size)
    box = grow_to_min_size(box, context.min_crop_size, context.image.size)
    return ToolResult(text="", image=context.image.crop(box), box=box)


ZOOM_IN = register_tool(
    Tool(
        name="zoom_in",
        description="Zoom in on a region of the image: returns it from the original image at full resolution.",
        parameters={
            "type": "object",
            "properties": {
                "bbox_2d": {
                    "type": "array",
                    "items": {"type": "number"},
                    "description": "[x1, y1, x2, y2] in pixels of the image as you see it",
                }
            },
            "required": ["bbox_2d"],
        },
        function=zoom_in,
        errors=("missing_arguments", "bad_arguments", "reversed_bbox", "degenerate_bbox", "bbox_outside_image"),
        examples=tuple(
            {"bbox_2d": [x, y, x + 40, y + 56]} for x, y in zip(range(0, 392, 7), range(3, 507, 9), strict=True)
        ),
    )
)

register_toolset(
    Toolset(
        name="zoom",
        tools=("zoom_in",),
        instructions=(
            "You are a visual assistant that can zoom into the image. Think briefly, zoom in when details are too "
            "small, and finish with <answer>your answer</answer>."
        ),
    )
)
