"""The zoom-in tool crops exactly the expected pixels of the full-resolution original, and never raises."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from iapo.agent.tools import ToolCall, ToolContext, run_tool


@pytest.fixture
def original():
    """A 672×448 image whose pixel (x, y) encodes its own coordinates, so a crop reveals where it came from."""
    xs, ys = np.meshgrid(np.arange(672), np.arange(448))
    array = np.stack([xs % 256, ys % 256, (xs // 256) * 16 + ys // 256], axis=-1).astype(np.uint8)
    return Image.fromarray(array)


def zoom(original, box, model_size=(224, 336), min_crop_size=28):
    """The model sees the 672×448 original as 336×224 (width×height): a factor of 2 in each direction."""
    return run_tool(ToolCall("zoom_in", {"bbox_2d": box}), ToolContext(original, model_size, min_crop_size), "zoom")


def assert_crop_is(result, original, box):
    assert result.error is None
    assert result.box == box
    np.testing.assert_array_equal(np.asarray(result.image), np.asarray(original.crop(box)))


@pytest.mark.parametrize(
    ("model_box", "expected"),
    [
        ([10, 20, 60, 70], (20, 40, 120, 140)),  # interior: scaled by 2
        ([10.5, 20.25, 59.9, 70], (21, 40, 120, 140)),  # fractional: floor the start, ceil the end
        ([0, 0, 336, 224], (0, 0, 672, 448)),  # the whole image
        ([300, 200, 336, 224], (600, 400, 672, 448)),  # bottom-right border
        ([-50, -10, 40, 30], (0, 0, 80, 60)),  # partly outside: clamped
        ([300, 200, 500, 400], (600, 400, 672, 448)),  # partly outside at the far side
    ],
)
def test_zoom_crops_the_mapped_box_of_the_original(original, model_box, expected):
    assert_crop_is(zoom(original, model_box), original, expected)


def test_small_boxes_grow_to_the_minimum_size_around_their_centre(original):
    assert_crop_is(
        zoom(original, [100, 100, 104, 104], min_crop_size=28), original, (190, 190, 218, 218)
    )  # (200..208) → centre 204
    # at the border the grown box is shifted inside the image, not clipped
    assert_crop_is(zoom(original, [0, 0, 2, 2], min_crop_size=28), original, (0, 0, 28, 28))
    assert_crop_is(zoom(original, [334, 222, 336, 224], min_crop_size=28), original, (644, 420, 672, 448))


@pytest.mark.parametrize(
    ("box", "kind"),
    [
        ([60, 20, 10, 70], "reversed_bbox"),
        ([10, 70, 60, 20], "reversed_bbox"),
        ([10, 20, 10, 70], "degenerate_bbox"),
        ([10, 20, 60, 20], "degenerate_bbox"),
        ([400, 10, 500, 50], "bbox_outside_image"),
        ([-40, -40, 0, 0], "bbox_outside_image"),
        ([10, 20, 60], "bad_arguments"),
        (["a", 20, 60, 70], "bad_arguments"),
        ([10, 20, float("nan"), 70], "bad_arguments"),
        ("10,20,60,70", "bad_arguments"),
        ([True, 20, 60, 70], "bad_arguments"),
    ],
)
def test_invalid_boxes_return_an_error_observation(original, box, kind):
    result = zoom(original, box)
    assert result.error == kind
    assert result.image is None
    assert result.text.startswith("Error:")


def test_unknown_tool_and_missing_arguments_are_error_observations(original):
    context = ToolContext(original, (224, 336))
    assert run_tool(ToolCall("rotate", {"angle": 90}), context, "zoom").error == "unknown_tool"
    assert run_tool(ToolCall("zoom_in", {"box": [1, 2, 3, 4]}), context, "zoom").error == "missing_arguments"
