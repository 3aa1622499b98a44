"""The paper setting's tools: ReFocus's visual edits of charts and tables, as registered tools and toolsets.

Twelve tools `focus_on_{columns,rows,x_values,y_values}_with_{mask,draw,highlight}` edit the image by the label boxes
that ship with each example (`meta["refocus"]`, layout `iapo.data.sample.REFOCUS_META`): on a table, columns / rows;
on a vertical bar chart, x values; on a horizontal bar chart, y values. The model names the labels to focus on
(`{"rows_to_focus_on": ["1972", "1973"]}`); labels match the example's after case and whitespace normalisation.

The edits reproduce ReFocus's (`src/tools.py` of ReFocus, also VTool-R1's copy) pixel for pixel:
- every box is inset by 2 px as ReFocus does (`int(x1 + 2), int(y1 + 2), int(x2 - 2), int(y2 - 2)`, inclusive);
- *mask* fills every box that is not selected with white; a table's header row (its first row box) is never
  masked;
- *draw* outlines each selected box in red, 5 px wide, inside the box;
- *highlight* composites red at alpha 50/255 over each selected box (overlapping boxes are not darkened twice).
Unlike ReFocus, an edit never changes the image it is given (it returns a new RGB image), an unknown label is a
counted error whose observation lists the valid labels (ReFocus raises, or skips it silently in some tools), an
argument other than the label list is a counted error ("bad_arguments"; ReFocus has no other parameter), and a
label that occurs twice selects both boxes. The image edited is `ToolContext.edit_base`: the original, or the latest
returned image with `sampling.edit_latest: true` (VTool-R1: one tool round on the original).

An edit that would change no pixel is a counted error, "no_change" (ReFocus returns the input unchanged): an empty
label list, a mask with every box selected or with nothing left to keep, a draw or highlight whose boxes lie outside
the image or vanish in the inset. It is declared in every edit tool's `errors`, so `tool_failure_kinds` counts it
as a failed call and only calls that edited the image escape `tools/failure_frequency`. Label boxes that do not follow
`REFOCUS_META` (a data problem; the loaders reject such rows when they read a file) are the error "bad_label_boxes".

Toolsets: `table` (the six column / row tools), `chart` (the six x / y value tools) and `refocus` (all twelve, for
runs that mix charts and tables); each lists the example's labels in the question, as VTool-R1's prompt does.

    sampling: {toolset: table, max_turns: 2}          # config
    run_tool(ToolCall("focus_on_rows_with_mask", {"rows_to_focus_on": ["A"]}), context, "table")
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageDraw

from iapo.agent.tools.registry import Tool, ToolContext, ToolError, ToolResult, Toolset, register_tool, register_toolset
from iapo.data.sample import BadRowError, refocus_pairs

Box = tuple[float, float, float, float]
PixelBox = tuple[int, int, int, int]

INSET = 2
"""ReFocus shrinks every label box by 2 px on each side before editing."""
OUTLINE_WIDTH = 5
RED = (255, 0, 0)
HIGHLIGHT_ALPHA = 50
WHITE = (255, 255, 255)

EDITS = ("mask", "draw", "highlight")
EDIT_ERRORS = (
    "missing_arguments",
    "bad_arguments",
    "unknown_label",
    "no_labels",
    "no_change",
    "bad_label_boxes",
    "canvas_size_mismatch",
)
HIGHLIGHT_STRIP_ROWS = 64
"""Highlight composites this many rows at a time: RGBA copies of a whole 6000 x 6000 image would cost ~0.5 GB."""


@dataclass(frozen=True)
class LabelKind:
    """One kind of labelled box: its key in `meta["refocus"]`, the tool argument that selects it, and its wording."""

    key: str
    argument: str
    noun: str
    subject: str
    keeps_header: bool = False


LABEL_KINDS = {
    "columns": LabelKind("columns", "columns_to_focus_on", "column", "columns of the table"),
    "rows": LabelKind("rows", "rows_to_focus_on", "row", "rows of the table", keeps_header=True),
    "x_values": LabelKind("x_values", "x_values_to_focus_on", "x value", "x-axis values of a vertical bar chart"),
    "y_values": LabelKind("y_values", "y_values_to_focus_on", "y value", "y-axis values of a horizontal bar chart"),
}


def tool_name(kind: str, edit: str) -> str:
    return f"focus_on_{kind}_with_{edit}"


def normalize_label(label: str) -> str:
    """Case- and whitespace-insensitive form of a label: `"  Game\\nVersion "` and `"game version"` match."""
    return " ".join(label.split()).casefold()


def label_boxes(meta: Mapping[str, Any], kind: str) -> list[tuple[str, Box]]:
    """The (label, box) pairs of `kind` in `meta["refocus"]`, in reading order ([] when the example has none).

    Raises `BadRowError` (a ValueError) for a layout that is not `REFOCUS_META`: a loader bug, not a model error
    (loaders check what they read with `refocus_pairs`).
    """
    refocus = meta.get("refocus") or {}
    if not isinstance(refocus, Mapping):
        raise BadRowError("bad_boxes", f'meta["refocus"] must be an object, got {type(refocus).__name__}')
    return refocus_pairs(refocus.get(kind), kind)


def unique_labels(pairs: Sequence[tuple[str, Box]]) -> list[str]:
    """Labels in reading order, each once."""
    return list(dict.fromkeys(label for label, _ in pairs))


def pixel_box(box: Box, size: tuple[int, int]) -> PixelBox | None:
    """ReFocus's inclusive pixel box (inset by `INSET`), clipped to an image of PIL `size`; None when empty."""
    width, height = size
    x1, y1 = max(int(box[0] + INSET), 0), max(int(box[1] + INSET), 0)
    x2, y2 = min(int(box[2] - INSET), width - 1), min(int(box[3] - INSET), height - 1)
    return (x1, y1, x2, y2) if x1 <= x2 and y1 <= y2 else None


def _pixel_boxes(boxes: Sequence[Box], size: tuple[int, int]) -> list[PixelBox]:
    return [b for b in (pixel_box(box, size) for box in boxes) if b is not None]


def mask_boxes(image: Image.Image, boxes: Sequence[Box]) -> Image.Image:
    """A copy of `image` with every box filled white."""
    edited = image.convert("RGB")
    draw = ImageDraw.Draw(edited)
    for box in _pixel_boxes(boxes, edited.size):
        draw.rectangle(box, fill=WHITE)
    return edited


def draw_boxes(image: Image.Image, boxes: Sequence[Box]) -> Image.Image:
    """A copy of `image` with a red outline, `OUTLINE_WIDTH` px wide, inside every box."""
    edited = image.convert("RGB")
    draw = ImageDraw.Draw(edited)
    for box in _pixel_boxes(boxes, edited.size):
        draw.rectangle(box, outline=RED, width=OUTLINE_WIDTH)
    return edited


def highlight_boxes(image: Image.Image, boxes: Sequence[Box]) -> Image.Image:
    """A copy of `image` with translucent red (alpha `HIGHLIGHT_ALPHA`/255) composited over every box.

    As in ReFocus, the red is drawn into an overlay (pixels replaced, so overlapping boxes are tinted once) that is
    alpha-composited over the image; here band by band (`HIGHLIGHT_STRIP_ROWS`) over the boxes' extent only, so the
    only full-size allocation is the returned copy (compositing is per pixel: the result is the same).
    """
    edited = image.convert("RGB")
    pixel_boxes = _pixel_boxes(boxes, edited.size)
    if not pixel_boxes:
        return edited
    left, right = min(b[0] for b in pixel_boxes), max(b[2] for b in pixel_boxes) + 1
    top, bottom = min(b[1] for b in pixel_boxes), max(b[3] for b in pixel_boxes) + 1
    for band_top in range(top, bottom, HIGHLIGHT_STRIP_ROWS):
        band = (left, band_top, right, min(band_top + HIGHLIGHT_STRIP_ROWS, bottom))
        base = edited.crop(band).convert("RGBA")
        overlay = base.copy()
        draw = ImageDraw.Draw(overlay)
        for x1, y1, x2, y2 in pixel_boxes:
            if y1 < band[3] and y2 >= band_top:
                draw.rectangle((x1 - left, y1 - band_top, x2 - left, y2 - band_top), fill=(*RED, HIGHLIGHT_ALPHA))
        edited.paste(Image.alpha_composite(base, overlay).convert("RGB"), band[:2])
    return edited


def _selected_labels(arguments: Mapping[str, Any], kind: LabelKind) -> list[str]:
    if kind.argument not in arguments:
        raise ToolError("missing_arguments", f'this tool needs "{kind.argument}": [{kind.noun} labels]')
    extra = [name for name in arguments if name != kind.argument]
    if extra:  # a misspelt or invented option would otherwise be ignored and the call look successful
        raise ToolError("bad_arguments", f"unexpected argument(s) {json.dumps(extra)[:200]}; only {kind.argument}")
    labels = arguments[kind.argument]
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise ToolError("bad_arguments", f"{kind.argument} must be a list of {kind.noun} labels (strings)")
    return labels


def select(pairs: Sequence[tuple[str, Box]], labels: Sequence[str], kind: LabelKind) -> list[bool]:
    """Which pairs the labels select (matched after `normalize_label`); raises ToolError for an unknown label."""
    known = {normalize_label(label) for label, _ in pairs}
    wanted = {normalize_label(label) for label in labels}
    unknown = [label for label in labels if normalize_label(label) not in known]
    if unknown:
        valid = json.dumps(unique_labels(pairs), ensure_ascii=False)
        raise ToolError(
            "unknown_label",
            f"unknown {kind.noun} label(s) {json.dumps(unknown, ensure_ascii=False)}; the {kind.noun}s are {valid}",
        )
    return [normalize_label(label) in wanted for label, _ in pairs]


def apply_edit(
    image: Image.Image, pairs: Sequence[tuple[str, Box]], chosen: Sequence[bool], edit: str, kind: LabelKind
) -> Image.Image:
    """The edited copy for one edit of the chosen pairs; raises ToolError "no_change" when it would change no pixel."""
    boxes = [box for _, box in pairs]
    if edit == "mask":
        keep = [c or (kind.keeps_header and i == 0) for i, c in enumerate(chosen)]
        # a table keeps its header row, so "something remains" means a selected row besides it
        remaining = any(c for i, c in enumerate(chosen) if not (kind.keeps_header and i == 0))
        touched = [b for b, k in zip(boxes, keep, strict=True) if not k]
        if not remaining:
            raise ToolError("no_change", f"every {kind.noun} would be masked, so the image would not change")
    else:
        touched = [b for b, c in zip(boxes, chosen, strict=True) if c]
        if not touched:
            raise ToolError("no_change", f"no {kind.noun} was selected, so the image would not change")
    if not _pixel_boxes(touched, image.size):
        reason = "nothing is left to mask" if edit == "mask" else "their boxes lie outside the image"
        raise ToolError("no_change", f"{reason}, so the image would not change")
    edit_boxes = {"mask": mask_boxes, "draw": draw_boxes, "highlight": highlight_boxes}[edit]
    return edit_boxes(image, touched)


def focus_tool(kind: LabelKind, edit: str):
    """The tool function of one (label kind, edit)."""

    def run(arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        labels = _selected_labels(arguments, kind)
        try:
            pairs = label_boxes(context.meta, kind.key)
        except ValueError as err:
            raise ToolError("bad_label_boxes", f"this example's label boxes are unusable ({err})") from None
        if not pairs:
            raise ToolError("no_labels", f"this image has no {kind.noun} labels to focus on; answer from the image")
        base = context.edit_base
        if base.size != context.image.size:
            raise ToolError(
                "canvas_size_mismatch",
                f"the image to edit is {base.width}x{base.height}, its label boxes are for "
                f"{context.image.width}x{context.image.height}",
            )
        return ToolResult(text="", image=apply_edit(base, pairs, select(pairs, labels, kind), edit, kind))

    return run


EDIT_WORDING = {
    "mask": "by masking out (filling white) every {noun} not selected{header}",
    "draw": "by drawing a red box around each of them",
    "highlight": "by highlighting each of them in translucent red",
}

EXAMPLE_LABELS = {
    "columns": (["Year", "Name"], ["Q2"], ["Game Version", "Manager Name"]),
    "rows": (["1972"], ["owl", "fox"], ["3", "4", "5"]),
    "x_values": (["2019"], ["China", "USA"], ["owl"]),
    "y_values": (["Josh"], ["cat", "dog"], ["2005"]),
}


def _register_edit_tools() -> None:
    for kind in LABEL_KINDS.values():
        for edit in EDITS:
            header = ("; the header row is kept" if kind.keeps_header else "") if edit == "mask" else ""
            how = EDIT_WORDING[edit].format(noun=kind.noun, header=header)
            register_tool(
                Tool(
                    name=tool_name(kind.key, edit),
                    description=f"Focus on some {kind.subject} {how}. Returns the edited image.",
                    parameters={
                        "type": "object",
                        "properties": {
                            kind.argument: {
                                "type": "array",
                                "items": {"type": "string"},
                                "description": f"the {kind.noun} labels to focus on, as listed with the question",
                            }
                        },
                        "required": [kind.argument],
                    },
                    function=focus_tool(kind, edit),
                    errors=EDIT_ERRORS,
                    examples=tuple({kind.argument: labels} for labels in EXAMPLE_LABELS[kind.key]),
                )
            )


_register_edit_tools()


def describe_labels(meta: Mapping[str, Any], kinds: Sequence[str]) -> list[str]:
    """The question's lines naming the labels the tools accept, as VTool-R1's prompt lists them."""
    wording = {
        "columns": "The columns in the image are: {}.",
        "rows": "The rows in the image start with: {}.",
        "x_values": "The x values in the image are: {}.",
        "y_values": "The y values in the image are: {}.",
    }
    lines = []
    for kind in kinds:
        labels = unique_labels(label_boxes(meta, kind))
        if labels:
            lines.append(wording[kind].format(json.dumps(labels, ensure_ascii=False)))
    return lines or ["The image has no labelled boxes, so the tools cannot edit it."]


def _toolset(name: str, kinds: tuple[str, ...], what: str, how: str) -> Toolset:
    return Toolset(
        name=name,
        tools=tuple(tool_name(kind, edit) for kind in kinds for edit in EDITS),
        instructions=(
            f"You are a visual assistant that answers questions about {what}. You can edit the image to focus on "
            f"{how}: mask out the others, draw a red box around them, or highlight them; the edited image is returned "
            "to you. Use the labels listed with the question. Think briefly, edit the image when it helps, and "
            "finish with <answer>your answer</answer>."
        ),
        describe_example=lambda meta: describe_labels(meta, kinds),
    )


register_toolset(_toolset("table", ("columns", "rows"), "tables", "the relevant columns and rows"))
register_toolset(
    _toolset("chart", ("x_values", "y_values"), "bar charts", "the relevant bars by their x values or y values")
)
register_toolset(
    _toolset(
        "refocus",
        ("columns", "rows", "x_values", "y_values"),
        "tables and bar charts",
        "the relevant columns and rows of a table, or bars of a chart by their x or y values",
    )
)
