"""The ReFocus edits give exactly the expected pixels (mask / draw / highlight, header row kept; an edit that would
change nothing is the counted error "no_change"), bad calls are counted errors that list the labels, and `predict` writes the edited images."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from iapo.agent.prompts import format_question
from iapo.agent.rollout import SamplingSettings, rollout
from iapo.agent.tools import ToolCall, ToolContext, format_tool_call, get_toolset, run_tool, tool_failure_kinds
from iapo.agent.tools.refocus import normalize_label
from iapo.data.sample import VQASample
from iapo.training.callbacks import RolloutWriter

WIDTH, HEIGHT = 200, 120
COLUMNS = [["Name", [0, 0, 60, 120]], ["Team", [60.7, 0, 130.4, 120]], ["Game Version", [130, 0, 200, 120]]]
ROWS = [
    ["Name", [0, 0, 200, 30]],
    ["John Roth", [0, 30, 200, 60]],
    ["Alice", [0, 60, 200, 90]],
    ["Bob", [0, 90, 200, 120]],
]
X_VALUES = [["2019", [10, 5, 60, 115]], ["2020", [75, 5, 125, 115]], ["2021", [140, 5, 190, 115]]]
Y_VALUES = [["cat", [5, 10, 195, 40]], ["dog", [5, 45, 195, 75]], ["elk", [5, 80, 195, 110]]]
META = {"refocus": {"kind": "table", "columns": COLUMNS, "rows": ROWS, "x_values": X_VALUES, "y_values": Y_VALUES}}
GROUPS = {"columns": COLUMNS, "rows": ROWS, "x_values": X_VALUES, "y_values": Y_VALUES}


@pytest.fixture(scope="module")
def original() -> Image.Image:
    """Every channel of every pixel is 0 or 255 at random, so an edit anywhere shows, and the highlight's blend
    (red at alpha 50/255) is an exact integer: 255 stays 255 / 205, 0 becomes 50 / 0."""
    rng = np.random.default_rng(0)
    return Image.fromarray((rng.integers(0, 2, size=(HEIGHT, WIDTH, 3)) * 255).astype(np.uint8))


def pixel_region(box) -> tuple[slice, slice]:
    """ReFocus's pixel box: inset by 2 px, inclusive ends, written here independently of the tool."""
    x1, y1, x2, y2 = int(box[0] + 2), int(box[1] + 2), int(box[2] - 2), int(box[3] - 2)
    return slice(y1, y2 + 1), slice(x1, x2 + 1)


def expected_edit(original: Image.Image, pairs, chosen: list[bool], edit: str, keeps_header: bool) -> np.ndarray:
    out = np.asarray(original).copy()
    for index, ((_, box), selected) in enumerate(zip(pairs, chosen, strict=True)):
        rows, cols = pixel_region(box)
        if edit == "mask" and not selected and not (keeps_header and index == 0):
            out[rows, cols] = 255
        elif edit == "draw" and selected:
            ring = np.ones(out[rows, cols].shape[:2], dtype=bool)
            ring[5:-5, 5:-5] = False
            out[rows, cols][ring] = (255, 0, 0)
        elif edit == "highlight" and selected:
            region = out[rows, cols]
            region[..., 0] = np.where(region[..., 0] == 255, 255, 50)
            region[..., 1:] = np.where(region[..., 1:] == 255, 205, 0)
    return out


def call(original, name, arguments, meta=META, canvas=None, toolset="refocus"):
    return run_tool(
        ToolCall(name, arguments), ToolContext(original, (HEIGHT, WIDTH), meta=meta, canvas=canvas), toolset
    )


SELECTIONS = {
    "columns": ["name", "  GAME\tversion "],  # case and whitespace do not matter
    "rows": ["Alice"],
    "x_values": ["2020", "2021"],
    "y_values": ["DOG"],
}


@pytest.mark.parametrize("edit", ["mask", "draw", "highlight"])
@pytest.mark.parametrize("kind", ["columns", "rows", "x_values", "y_values"])
def test_every_edit_gives_exactly_the_expected_pixels(original, kind, edit):
    before = np.asarray(original).copy()
    selection = SELECTIONS[kind]
    result = call(original, f"focus_on_{kind}_with_{edit}", {f"{kind}_to_focus_on": selection})
    assert result.error is None and result.text == ""
    assert result.image.mode == "RGB" and result.image.size == original.size
    wanted = {normalize_label(label) for label in selection}
    chosen = [normalize_label(label) in wanted for label, _ in GROUPS[kind]]
    expected = expected_edit(original, GROUPS[kind], chosen, edit, keeps_header=kind == "rows")
    np.testing.assert_array_equal(np.asarray(result.image), expected)
    assert not np.array_equal(expected, before)  # the edit changed something
    np.testing.assert_array_equal(np.asarray(original), before)  # and never the image it was given


def test_a_row_mask_keeps_the_header_row(original):
    result = call(original, "focus_on_rows_with_mask", {"rows_to_focus_on": ["Bob"]})
    edited, source = np.asarray(result.image), np.asarray(original)
    header, john, alice, bob = (pixel_region(box) for _, box in ROWS)
    np.testing.assert_array_equal(edited[header], source[header])
    np.testing.assert_array_equal(edited[bob], source[bob])
    assert (edited[john] == 255).all() and (edited[alice] == 255).all()


@pytest.mark.parametrize(
    ("name", "arguments"),
    [
        ("focus_on_rows_with_mask", {"rows_to_focus_on": ["Name"]}),  # only the header: every data row would go
        ("focus_on_rows_with_mask", {"rows_to_focus_on": []}),
        ("focus_on_columns_with_mask", {"columns_to_focus_on": []}),
        ("focus_on_x_values_with_mask", {"x_values_to_focus_on": []}),
    ],
)
def test_masking_everything_is_a_counted_no_change(original, name, arguments):
    result = call(original, name, arguments)
    assert result.error == "no_change" and result.image is None and "would not change" in result.text
    assert "no_change" in tool_failure_kinds()


def test_draw_and_highlight_with_nothing_selected_are_a_counted_no_change(original):
    for edit in ("draw", "highlight"):
        result = call(original, f"focus_on_columns_with_{edit}", {"columns_to_focus_on": []})
        assert result.error == "no_change" and result.image is None


def test_an_unknown_label_is_a_counted_error_that_lists_the_labels(original):
    result = call(original, "focus_on_columns_with_draw", {"columns_to_focus_on": ["Team", "Score"]})
    assert result.error == "unknown_label" and result.image is None
    assert '["Score"]' in result.text and '["Name", "Team", "Game Version"]' in result.text
    assert "unknown_label" in tool_failure_kinds()


@pytest.mark.parametrize(
    ("arguments", "kind"),
    [
        ({}, "missing_arguments"),
        ({"rows": ["Bob"]}, "missing_arguments"),
        ({"rows_to_focus_on": "Bob"}, "bad_arguments"),
        ({"rows_to_focus_on": [1972]}, "bad_arguments"),
        ({"rows_to_focus_on": [["Bob"]]}, "bad_arguments"),
    ],
)
def test_malformed_arguments_are_counted_errors(original, arguments, kind):
    result = call(original, "focus_on_rows_with_highlight", arguments)
    assert result.error == kind and result.image is None and result.text.startswith("Error:")


def test_an_example_without_those_labels_is_a_counted_error(original):
    table_only = {"refocus": {"kind": "table", "columns": COLUMNS, "rows": ROWS, "x_values": [], "y_values": []}}
    result = call(original, "focus_on_x_values_with_draw", {"x_values_to_focus_on": ["2019"]}, meta=table_only)
    assert result.error == "no_labels"
    assert call(original, "focus_on_columns_with_draw", {"columns_to_focus_on": ["x"]}, meta={}).error == "no_labels"


def test_tools_outside_the_toolset_are_unknown(original):
    result = call(original, "focus_on_rows_with_draw", {"rows_to_focus_on": ["Bob"]}, toolset="chart")
    assert result.error == "unknown_tool"
    assert set(get_toolset("table").tools) | set(get_toolset("chart").tools) == set(get_toolset("refocus").tools)


def test_a_repeated_label_selects_every_box_it_labels(original):
    meta = {"refocus": {"kind": "table", "rows": [*ROWS[:3], ["John Roth", ROWS[3][1]]]}}
    result = call(original, "focus_on_rows_with_mask", {"rows_to_focus_on": ["John Roth"]}, meta=meta)
    edited, source = np.asarray(result.image), np.asarray(original)
    for index, (_, box) in enumerate(meta["refocus"]["rows"]):
        region = pixel_region(box)
        if index == 2:  # "Alice" is the only row masked
            assert (edited[region] == 255).all()
        else:
            np.testing.assert_array_equal(edited[region], source[region])


def test_edits_apply_to_the_canvas_when_given(original):
    canvas = Image.new("RGB", original.size, (0, 0, 0))
    result = call(original, "focus_on_columns_with_mask", {"columns_to_focus_on": ["Name"]}, canvas=canvas)
    edited = np.asarray(result.image)
    assert (edited[pixel_region(COLUMNS[1][1])] == 255).all()
    np.testing.assert_array_equal(edited[pixel_region(COLUMNS[0][1])], 0)  # the canvas, not the original
    small = Image.new("RGB", (50, 50))
    mismatch = call(original, "focus_on_columns_with_mask", {"columns_to_focus_on": ["Name"]}, canvas=small)
    assert mismatch.error == "canvas_size_mismatch"


def test_boxes_outside_the_image_are_clipped(original):
    meta = {"refocus": {"kind": "chart_v", "x_values": [["a", [-40, -40, 30, 30]], ["b", [150, 90, 400, 400]]]}}
    result = call(original, "focus_on_x_values_with_mask", {"x_values_to_focus_on": ["a"]}, meta=meta)
    edited = np.asarray(result.image)
    assert (edited[92:, 152:] == 255).all()
    np.testing.assert_array_equal(edited[:92], np.asarray(original)[:92])


@pytest.mark.parametrize(
    "pairs", [[["a", [0, 0, 1]]], [["a"]], [[3, [0, 0, 1, 1]]], [["a", [0, 0, float("nan"), 1]]], ["a"]]
)
def test_a_malformed_label_layout_is_a_counted_error_naming_it(original, pairs):
    result = call(original, "focus_on_rows_with_mask", {"rows_to_focus_on": ["a"]}, meta={"refocus": {"rows": pairs}})
    assert result.error == "bad_label_boxes" and 'meta["refocus"]["rows"][0]' in result.text


def sample(image: Image.Image, meta=META, question="Which team is Alice in?") -> VQASample:
    return VQASample(
        uid="t1", source="test", image=image, question=question, answer="Blue", answer_type="exact", meta=meta
    )


def test_the_question_lists_the_labels_the_toolset_accepts(original):
    table = format_question(sample(original), "table")
    assert 'The columns in the image are: ["Name", "Team", "Game Version"].' in table
    assert 'The rows in the image start with: ["Name", "John Roth", "Alice", "Bob"].' in table
    assert "x values" not in table
    chart = format_question(
        sample(original, {"refocus": {"kind": "chart_h", "x_values": [], "y_values": Y_VALUES}}), "chart"
    )
    assert 'The y values in the image are: ["cat", "dog", "elk"].' in chart and "x values" not in chart
    assert "no labelled boxes" in format_question(sample(original, {}), "refocus")


def test_predict_writes_each_edited_image_beside_the_trajectories(tiny_processor, original, scripted, tmp_path):
    edit = format_tool_call("focus_on_rows_with_highlight", {"rows_to_focus_on": ["Alice"]})
    bad = format_tool_call("focus_on_columns_with_mask", {"columns_to_focus_on": ["Score"]})
    policy = scripted(tiny_processor.tokenizer, [["Look. " + edit, bad], ["<answer>Blue</answer>"] * 2])
    settings = SamplingSettings(toolset="table", max_turns=2, max_new_tokens=64)
    trajectories = rollout(policy, tiny_processor, [sample(original)], [original], group_size=2, settings=settings)
    good, failed = trajectories
    assert good.num_images == 2 and good.stats.calls_by_tool == {"focus_on_rows_with_highlight": 1}
    assert failed.num_images == 1 and failed.stats.errors == {"unknown_label": 1} and failed.stats.failures == 1
    assert "Game Version" in failed.turns[0].observation

    writer = RolloutWriter(output_dir=str(tmp_path), run_name="run")
    trainer = SimpleNamespace(strategy=SimpleNamespace(broadcast=lambda value: value), world_size=1, global_rank=0)
    writer.on_predict_start(trainer, None)
    prediction = {"samples": [sample(original)], "trajectories": trajectories, "skipped": {}}
    writer.write_on_batch_end(trainer, None, prediction, None, None, batch_idx=0, dataloader_idx=0)
    writer.on_predict_end(trainer, None)
    records = [json.loads(line) for line in (tmp_path / "run" / "rollouts.jsonl").read_text().splitlines()]
    written = records[0]["turns"][0]["crop_file"]
    assert written is not None and records[1]["turns"][0]["crop_file"] is None
    chosen = [label == "Alice" for label, _ in ROWS]
    expected = expected_edit(original, ROWS, chosen, "highlight", keeps_header=True)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "run" / written)), expected)
