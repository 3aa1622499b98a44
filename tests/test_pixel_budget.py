"""Pixel budgets: configured per model, applied by its processor to the prompt image and to every tool-returned image
(the crop goes through the same processor), for the real Qwen2.5-VL processor and the tiny models alike."""

from __future__ import annotations

import copy

import pytest
from PIL import Image

from iapo.agent.rollout import SamplingSettings, rollout
from iapo.data.sample import VQASample
from iapo.models.loader import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_PIXELS,
    PIXELS_PER_TOKEN,
    ModelSettings,
    load_processor,
    pixel_budget,
)

REAL_BUDGET = (3136, 12845056)
"""The real Qwen2.5-VL processor's own budget (`tests/fixtures/qwen2.5-vl/preprocessor_config.json`)."""


def zoom(box: list[int]) -> str:
    return f'<tool_call>{{"name": "zoom_in", "arguments": {{"bbox_2d": {box}}}}}</tool_call>'


def budget_of(processor) -> tuple[int, int]:
    size = processor.image_processor.size
    return size["shortest_edge"], size["longest_edge"]


@pytest.fixture(scope="module")
def real_processor():
    """The real Qwen2.5-VL processor (through the `tiny-qwen-tokenizer` spec) with the default budget."""
    return load_processor("tiny-qwen-tokenizer")


def with_budget(processor, low: int, high: int):
    processor = copy.deepcopy(processor)
    processor.image_processor.size = {"shortest_edge": low, "longest_edge": high}
    return processor


def test_defaults_cap_the_real_processor_and_keep_the_tiny_ones(real_processor):
    assert budget_of(real_processor) == (DEFAULT_MIN_PIXELS, DEFAULT_MAX_PIXELS)
    assert pixel_budget(REAL_BUDGET, None, None) == (DEFAULT_MIN_PIXELS, DEFAULT_MAX_PIXELS)
    assert pixel_budget(REAL_BUDGET, *REAL_BUDGET) == REAL_BUDGET
    assert pixel_budget(REAL_BUDGET, None, 100_352) == (100_352, 100_352)  # a default minimum never exceeds the max
    assert budget_of(load_processor("tiny-student")) == (28 * 28, 224 * 224)  # the spec's own, within the cap
    assert budget_of(load_processor("tiny-student", max_pixels=112 * 112)) == (28 * 28, 112 * 112)


def test_model_settings_reach_the_processor():
    _, processor = ModelSettings(name="tiny-student", min_pixels=56 * 56, max_pixels=336 * 336).load(device="cpu")
    assert budget_of(processor) == (56 * 56, 336 * 336)


@pytest.mark.parametrize(
    ("min_pixels", "max_pixels", "match"),
    [(None, 500, "below one visual token"), (300_000, 200_000, "min_pixels <= max_pixels"), (0, 1000, "0 < min")],
)
def test_bad_budgets_are_clear_errors(min_pixels, max_pixels, match):
    with pytest.raises(ValueError, match=match):
        pixel_budget(REAL_BUDGET, min_pixels, max_pixels)


@pytest.mark.parametrize("budget", ["default", "explicit", "tiny-student"])
def test_an_8k_image_and_its_crops_stay_inside_the_budget(real_processor, scripted, budget):
    """A 7680×4320 image, a zoom on most of it and a zoom on a few pixels, each encoded within [min_pixels,
    max_pixels]: the processor's budget covers tool-returned images too."""
    processor = {
        "default": real_processor,
        "explicit": with_budget(real_processor, 50_176, 401_408),
        "tiny-student": load_processor("tiny-student"),
    }[budget]
    low, high = budget_of(processor)
    image = Image.new("RGB", (7680, 4320), "white")
    sample = VQASample(uid="8k", source="test", image=image, question="What is written on the sign?", answer="A")
    # boxes are in the model's view of the image: the first runs from (20, 20) to its far corner, the second is tiny
    policy = scripted(processor.tokenizer, [zoom([20, 20, 10_000, 10_000]), zoom([0, 0, 2, 2]), "<answer>A</answer>"])
    [trajectory] = rollout(policy, processor, [sample], [image], settings=SamplingSettings(max_turns=3))

    assert trajectory.stats.calls == 2 and not trajectory.stats.errors, trajectory.stats.errors
    original, large, tiny = (crop.size for crop in trajectory.images)
    assert original == (7680, 4320) and 20_000_000 < large[0] * large[1] < 7680 * 4320
    assert tiny[0] * tiny[1] < 10_000
    patch = processor.image_processor.patch_size
    merge = processor.image_processor.merge_size
    for (start, end), grid in zip(trajectory.image_spans, trajectory.image_grid_thw, strict=True):
        pixels = int(grid.prod()) * patch * patch
        assert low <= pixels <= high
        assert end - start == int(grid.prod()) // merge**2 <= high // PIXELS_PER_TOKEN
    # the large crop fills the budget (within the 28-px rounding), the small one is enlarged to at least `low`
    large_pixels = int(trajectory.image_grid_thw[1].prod()) * patch * patch
    assert large_pixels > 0.75 * high
