"""The paper setting's tools under hostile calls: lone surrogates in labels reach the observation as U+FFFD, VTool-R1
blocks keep their string escapes, an edit that changes nothing is the counted error "no_change", unexpected
arguments are "bad_arguments", malformed label boxes never raise out of a tool, and highlight stays within a few
bytes per pixel."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image, ImageDraw

from iapo.agent.rollout import SamplingSettings, rollout
from iapo.agent.tools import ToolCall, ToolContext, run_tool, tool_failure_kinds
from iapo.agent.tools.refocus import HIGHLIGHT_ALPHA, RED, highlight_boxes, pixel_box
from iapo.agent.vtool import parse_program, parse_vtool_turn, run_vtool_call
from iapo.data.sample import VQASample

WIDTH, HEIGHT = 120, 80
ROWS = [["Name", [0, 0, 120, 20]], ["Game\nVersion", [0, 20, 120, 50]], ["Alice", [0, 50, 120, 80]]]
COLUMNS = [["Name", [0, 0, 60, 80]], ["Score", [60, 0, 120, 80]]]
META = {"refocus": {"kind": "table", "columns": COLUMNS, "rows": ROWS}}


@pytest.fixture(scope="module")
def image() -> Image.Image:
    rng = np.random.default_rng(3)
    return Image.fromarray((rng.integers(0, 2, size=(HEIGHT, WIDTH, 3)) * 255).astype(np.uint8))


def run(image, name, arguments, meta=META):
    return run_tool(ToolCall(name, arguments), ToolContext(image, (HEIGHT, WIDTH), meta=meta), "refocus")


def vtool(image, code, meta=META):
    return run_vtool_call(ToolCall("python", {"code": code}), ToolContext(image, (HEIGHT, WIDTH), meta=meta), "refocus")


# ---------------------------------------------------------------- lone surrogates (JSON escapes) in labels


@pytest.mark.parametrize("label", ["\\ud800", "\\udfff", "A\\ud83d", "\\udc80\\ud800x"])
def test_a_lone_surrogate_label_is_a_counted_error_and_the_rollout_goes_on(tiny_processor, scripted, image, label):
    sample = VQASample("s", "test", image, "Which row?", "Alice", answer_type="exact", meta=META)
    call = '<tool_call>{"name": "focus_on_rows_with_draw", "arguments": {"rows_to_focus_on": ["%s"]}}</tool_call>'
    policy = scripted(tiny_processor.tokenizer, [call % label, "<answer>Alice</answer>"])
    settings = SamplingSettings(toolset="table", max_turns=2, max_new_tokens=64)
    [trajectory] = rollout(policy, tiny_processor, [sample], [image], group_size=1, settings=settings)
    assert trajectory.stats.errors == {"unknown_label": 1} and trajectory.final_answer == "Alice"
    observation = trajectory.turns[0].observation
    assert "\ufffd" in observation and not any("\ud800" <= char <= "\udfff" for char in observation)
    observation.encode("utf-8")  # can be written to the rollout files


# ---------------------------------------------------------------- an edit that changes nothing


@pytest.mark.parametrize(
    ("name", "arguments", "kind"),
    [
        ("focus_on_rows_with_draw", {"rows_to_focus_on": []}, "no_change"),
        ("focus_on_rows_with_highlight", {"rows_to_focus_on": []}, "no_change"),
        ("focus_on_columns_with_mask", {"columns_to_focus_on": ["Name", "Score"]}, "no_change"),  # nothing to mask
        ("focus_on_columns_with_mask", {"columns_to_focus_on": []}, "no_change"),  # everything masked
        ("focus_on_rows_with_draw", {"rows_to_focus_on": ["Alice"], "colour": "blue"}, "bad_arguments"),
        ("focus_on_rows_with_draw", {"rows_to_focus_on": ["Alice"], "": None}, "bad_arguments"),
        ("focus_on_rows_with_mask", {"rows_to_focus_on": ["Alice"], "rows": ["Name"]}, "bad_arguments"),
    ],
)
def test_a_call_that_edits_nothing_is_a_counted_failure(image, name, arguments, kind):
    result = run(image, name, arguments)
    assert result.error == kind and result.image is None and result.text.startswith("Error:")
    assert kind in tool_failure_kinds()  # derived from the tools' declared errors: tools/failure_frequency counts it


@pytest.mark.parametrize(
    "boxes",
    [
        [["a", [500, 500, 900, 900]]],  # outside the image
        [["a", [-90, -90, -10, -10]]],
        [["a", [10, 10, 12, 12]]],  # gone after ReFocus's 2 px inset
    ],
)
@pytest.mark.parametrize("edit", ["draw", "highlight"])
def test_an_edit_of_boxes_that_touch_no_pixel_is_no_change(image, boxes, edit):
    meta = {"refocus": {"kind": "chart_v", "x_values": [*boxes, ["b", [0, 0, 50, 50]]]}}
    result = run(image, f"focus_on_x_values_with_{edit}", {"x_values_to_focus_on": ["a"]}, meta)
    assert result.error == "no_change"


@pytest.mark.parametrize(
    "code",
    [
        "display(image_1)",
        'a = focus_on_rows_with_draw(image_1, ["Alice"], rows_bbox)\ndisplay(image_1)',
        'labels = ["Alice"]\ndisplay(image_1)',
    ],
)
def test_a_block_that_displays_the_original_is_no_change(image, code):
    assert vtool(image, code).error == "no_change"


def test_no_change_counts_as_a_failed_call_in_the_rollout(tiny_processor, scripted, image):
    sample = VQASample("s", "test", image, "Which row?", "Alice", answer_type="exact", meta=META)
    empty = '<tool_call>{"name": "focus_on_rows_with_draw", "arguments": {"rows_to_focus_on": []}}</tool_call>'
    policy = scripted(tiny_processor.tokenizer, [empty, "<answer>Alice</answer>"])
    settings = SamplingSettings(toolset="table", max_turns=2, max_new_tokens=64)
    [trajectory] = rollout(policy, tiny_processor, [sample], [image], group_size=1, settings=settings)
    assert trajectory.stats.calls == 1 and trajectory.stats.failures == 1 and trajectory.num_images == 1


# ---------------------------------------------------------------- malformed label boxes never raise out of a tool


@pytest.mark.parametrize(
    "refocus",
    [
        ["rows"],
        "table",
        {"rows": "Alice"},
        {"rows": [["Alice", ["0", "0", "10", "10"]]]},
        {"rows": [["Alice", [0, 0, 10**400, 10]]]},
        {"rows": [["Alice", [0, 0, True, 10]]]},
        {"rows": [["Alice", [10, 0, 0, 10]]]},
        {"rows": {"Alice": [0, 0, 10, 10]}},
    ],
)
def test_malformed_label_boxes_are_a_counted_error_not_an_exception(image, refocus):
    result = run(image, "focus_on_rows_with_draw", {"rows_to_focus_on": ["Alice"]}, {"refocus": refocus})
    assert result.error in ("bad_label_boxes", "no_labels")
    assert vtool(image, 'display(focus_on_rows_with_draw(image_1, ["Alice"], rows_bbox))', {"refocus": refocus}).error


# ---------------------------------------------------------------- VTool-R1 blocks keep their escapes


@pytest.mark.parametrize(
    "code",
    [
        "display(focus_on_rows_with_draw(image_1, ['Game\\nVersion'], rows_bbox))",  # as our VTool prompt prints it
        'display(focus_on_rows_with_draw(image_1, ["Game\\u000aVersion"], rows_bbox))',
        "x = focus_on_rows_with_draw(image_1, \\\n    ['Game\\nVersion'], rows_bbox)\ndisplay(x)",  # continuation
        "x = focus\\_on\\_rows\\_with\\_draw(image\\_1, ['Alice'], rows\\_bbox)\ndisplay(x)",  # markdown escapes
    ],
)
def test_vtool_blocks_keep_string_escapes_and_line_continuations(image, code):
    turn = f"THOUGHT 0: look.\nACTION 0:\n```python\n{code}\n```\n"
    action = parse_vtool_turn(turn)
    assert action.kind == "tool_call" and action.error is None
    result = run_vtool_call(action.call, ToolContext(image, (HEIGHT, WIDTH), meta=META), "refocus")
    assert result.error is None and result.image is not None, result.text


def test_a_block_that_only_parses_without_backslashes_still_reads_as_vtool_r1_reads_it():
    program = parse_program("x = focus_on_rows_with_draw(image_1, ['Alice'], rows_bbox)\\\ndisplay(x)\\")
    assert [call.labels for call in program.calls] == [("Alice",)]


def test_a_label_holding_a_backslash_keeps_it():
    program = parse_program("display(focus_on_rows_with_draw(image_1, ['a\\\\b'], rows_bbox))")
    assert program.calls[0].labels == ("a\\b",)


# ---------------------------------------------------------------- highlight: same pixels, bounded memory


def reference_highlight(image: Image.Image, boxes) -> Image.Image:
    """ReFocus's highlight in one piece: a full-size RGBA overlay composited over the whole image."""
    base = image.convert("RGBA")
    overlay = base.copy()
    draw = ImageDraw.Draw(overlay)
    for box in boxes:
        pixels = pixel_box(box, base.size)
        if pixels is not None:
            draw.rectangle(pixels, fill=(*RED, HIGHLIGHT_ALPHA))
    return Image.alpha_composite(base, overlay).convert("RGB")


def test_banded_highlight_gives_the_same_pixels_as_one_composite():
    rng = np.random.default_rng(5)
    picture = Image.fromarray(rng.integers(0, 256, size=(700, 300, 3), dtype=np.uint8))
    for _ in range(20):
        boxes = []
        for _ in range(rng.integers(1, 5)):
            x1, y1 = rng.integers(-50, 300), rng.integers(-50, 700)
            boxes.append((float(x1), float(y1), float(x1 + rng.integers(0, 300)), float(y1 + rng.integers(0, 700))))
        expected = np.asarray(reference_highlight(picture, boxes))
        np.testing.assert_array_equal(np.asarray(highlight_boxes(picture, boxes)), expected)


def test_highlight_of_a_large_image_peaks_at_a_few_bytes_per_pixel():
    """In a fresh process: the growth of the peak resident memory over the input image, per pixel, when the whole
    6,000 x 6,000 image is highlighted (ReFocus's way: about 15 bytes per pixel)."""
    script = textwrap.dedent(
        """
        import resource
        from PIL import Image
        from iapo.agent.tools.refocus import highlight_boxes
        image = Image.new("RGB", (6000, 6000), (10, 200, 30))
        image.load()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        edited = highlight_boxes(image, [(0, 0, 6000, 6000), (100, 100, 5000, 5900)])
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        assert edited.getpixel((3000, 3000)) != image.getpixel((3000, 3000))
        print((after - before) * 1024 / (6000 * 6000))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    bytes_per_pixel = float(done.stdout.strip())
    assert bytes_per_pixel < 5, bytes_per_pixel  # the returned RGB copy (3 bytes per pixel) and a band at a time
