"""Synthetic bar charts and tables with label boxes in ReFocus's metadata layout, for the editing tools offline.

Each sample is one vertical bar chart, horizontal bar chart or table, drawn with PIL on a white `image_size`² canvas,
with a question that needs exactly one bar or row ("What is the value of owl?"; with several value columns, one
row and one column: "What is the Q2 of owl?"). The answer is a short number drawn from `values`. Every sample
carries ``meta["refocus"]`` in the `REFOCUS_META` layout (exact label boxes in canvas pixels: ``x_values`` for
vertical bars, ``y_values`` for horizontal bars, ``columns`` and ``rows`` for tables, header row first), so the
editing tools work on it as on ReFocus's test files, and ``meta["focus"]``, what an expert edit focuses on
(``{"x_values": ["owl"]}``, ``{"rows": ["owl"], "columns": ["Q2"]}``).

Why the edit helps, and why a tiny model can learn it: the label to focus on is written in the question, so a tool
call only copies it; the labels are short words from a small vocabulary and the values a handful of short numbers.
At the model's input (224 px for the tiny student) the label texts are a few pixels high, so finding the asked bar
or row among the others is hard, while after masking every other bar / row white one bar (its height) or one row
(its value cell) is left to read. `tests/test_synthetic_charts.py` measures this with a template reader at 224 px.
Difficulty knobs: `n_bars`, `n_rows`, `n_columns`, `font_size` (label and value text), `image_size`,
`values`, `value_labels`, `gridlines`.

    from iapo.data.synthetic_charts import SyntheticChartsConfig, build_split
    samples = build_split("train", 64, SyntheticChartsConfig(kinds=("chart_v",)), seed=0)   # in memory, PIL images

Write a split to disk (PNGs plus ``<split>.jsonl`` in the generic JSONL format of `iapo.data.jsonl`):

    python -m iapo.data.synthetic_charts --out data/synthetic_charts --train 2000 --val 200 --test 200
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from iapo.data.sample import VQASample
from iapo.data.synthetic_files import generator_main, write_samples

SOURCE = "synthetic_charts"
KINDS = ("chart_v", "chart_h", "table")

LABELS = ("ant", "bee", "cat", "cow", "dog", "eel", "elk", "fox", "gnu", "hen", "owl", "pig", "ram", "yak")
"""Bar / row labels: short, distinct words (three letters, so every label box has the same room)."""
COLUMN_NAMES = ("Q1", "Q2", "Q3", "Q4", "Q5", "Q6")
"""Headers of the value columns of a table with `n_columns` > 1 (a one-column table's header is "Value")."""
NAME_HEADER = "Name"

BACKGROUND = (255, 255, 255)
INK = (0, 0, 0)
BAR_COLOUR = (60, 100, 170)
GRID_COLOUR = (215, 215, 215)


@dataclass(frozen=True)
class SyntheticChartsConfig:
    """Difficulty knobs. The defaults are the easy setting for a tiny model on a CPU.

    `kinds` lists the kinds drawn (each sample draws one). Charts have `n_bars` bars; tables `n_rows` data rows
    and `n_columns` value columns (with more than one, the question names a column too, and the expert edit
    focuses on a row and a column). `font_size` is the size of every text (labels, values, headers) in canvas
    pixels; `image_size` the canvas side. `values` are the possible answers: short positive numbers, the bar
    length being proportional to the value. `value_labels` prints each bar's value at its end; `gridlines` draws
    a grid line and an axis tick label at each of `values`. `quote_labels` writes the asked label in double quotes
    (`What is the value of "ant"?`): a byte-level BPE splits a bare word after a space differently from the same word
    after a quote (` an` `t` against `ant` in a tool call's `["ant"]`), so only quoted does naming it in the call
    copy the question's tokens. `distinct_values` gives the bars / rows of one image distinct values (answer
    columns of a table), so an edit of the wrong one shows a wrong answer, never the right one by chance.
    """

    kinds: tuple[str, ...] = KINDS
    image_size: int = 448
    n_bars: int = 4
    n_rows: int = 4
    n_columns: int = 1
    font_size: int = 16
    values: tuple[str, ...] = ("10", "20", "30", "40", "50")
    labels: tuple[str, ...] = LABELS
    value_labels: bool = True
    gridlines: bool = True
    quote_labels: bool = False
    distinct_values: bool = False

    def __post_init__(self) -> None:
        if not self.kinds or any(kind not in KINDS for kind in self.kinds) or len(set(self.kinds)) != len(self.kinds):
            raise ValueError(f"kinds must be distinct names from {list(KINDS)}, got {list(self.kinds)}")
        try:
            numbers = [float(value) for value in self.values]
        except ValueError as err:
            raise ValueError(f"values must be numbers, got {list(self.values)}") from err
        if len(set(numbers)) < 2 or min(numbers) <= 0:
            raise ValueError(f"values must be at least two distinct positive numbers, got {list(self.values)}")
        if len(set(self.labels)) != len(self.labels) or NAME_HEADER in self.labels or not all(self.labels):
            raise ValueError(f"labels must be distinct non-empty words other than {NAME_HEADER!r}")
        if not 2 <= self.n_bars <= len(self.labels) or not 2 <= self.n_rows <= len(self.labels):
            raise ValueError(f"n_bars and n_rows must be in [2, {len(self.labels)}] (the number of labels)")
        if self.distinct_values and len(self.values) < max(self.n_bars, self.n_rows):
            raise ValueError(f"distinct_values needs at least max(n_bars, n_rows) values, got {len(self.values)}")
        if not 1 <= self.n_columns <= len(COLUMN_NAMES):
            raise ValueError(f"n_columns must be in [1, {len(COLUMN_NAMES)}], got {self.n_columns}")
        if not 6 <= self.font_size <= self.image_size // 8:
            raise ValueError(f"font_size must be in [6, image_size / 8 = {self.image_size // 8}], got {self.font_size}")
        for kind in self.kinds:  # every layout must leave each label its own room
            _layout(kind, self)


# --- layout ----------------------------------------------------------------------------------------------------


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.FreeTypeFont:
    """Pillow's bundled font at `size` px: the same glyphs on every machine with the same Pillow."""
    return ImageFont.load_default(size=size)


def _text_width(text: str, size: int) -> float:
    return _font(size).getlength(text)


@dataclass(frozen=True)
class Layout:
    """Where things go on the canvas: the plot (charts) or table area and the pitch of one bar / row."""

    area: tuple[float, float, float, float]
    pitch: float
    column_width: float = 0.0


def _layout(kind: str, config: SyntheticChartsConfig) -> Layout:
    """The geometry of `kind` under `config`; raises `ValueError` when the texts do not fit."""
    size, font = config.image_size, config.font_size
    label_width = max(_text_width(label, font) for label in config.labels)
    value_width = max(_text_width(value, font) for value in config.values)
    margin = max(4, size // 64)
    if kind == "chart_v":
        left = margin + (value_width + 6 if config.gridlines else 0)
        top = margin + font + 6  # room for the value label above the tallest bar
        bottom = size - margin - font - 6  # room for the x labels
        area = (left, top, size - margin, bottom)
        pitch = (area[2] - area[0]) / config.n_bars
        needed = max(label_width, value_width) + 4
    elif kind == "chart_h":
        left = margin + label_width + 8
        right = size - margin - (value_width + 6 if config.value_labels else 0)
        bottom = size - margin - (font + 6 if config.gridlines else 0)
        area = (left, margin, right, bottom)
        pitch = (area[3] - area[1]) / config.n_bars
        needed = font + 4
    else:
        columns = 1 + config.n_columns
        area = (margin, margin, size - margin, size - margin)
        pitch = min((area[3] - area[1]) / (config.n_rows + 1), 2.5 * font)
        column_width = (area[2] - area[0]) / columns
        area = (area[0], area[1], area[2], area[1] + pitch * (config.n_rows + 1))
        widest = max(label_width, value_width, _text_width(NAME_HEADER, font), _text_width("Value", font))
        if column_width < widest + 6:
            raise ValueError(
                f"{columns} columns of {column_width:.0f} px cannot hold {font}-px text; enlarge image_size"
            )
        return Layout(area, pitch, column_width)
    if pitch < needed:
        raise ValueError(
            f"{config.n_bars} bars of {pitch:.0f} px cannot hold {font}-px labels in a {size}-px {kind}; "
            "use fewer bars, a smaller font_size or a larger image_size"
        )
    return Layout(area, pitch)


# --- drawing ---------------------------------------------------------------------------------------------------


def _box(x1: float, y1: float, x2: float, y2: float) -> list[float]:
    return [round(x1, 2), round(y1, 2), round(x2, 2), round(y2, 2)]


def draw_chart(kind: str, bars: list[tuple[str, str]], config: SyntheticChartsConfig) -> tuple[Image.Image, list]:
    """A bar chart of (label, value) bars; returns the image and the (label, box) pairs of its bars.

    A label's box covers its whole band as ReFocus's do: for vertical bars from the top of the canvas to the bottom
    of the x labels, between the midpoints to the neighbouring bars; for horizontal bars the full width of the
    canvas, between the midpoints.
    """
    size, font_size = config.image_size, config.font_size
    font = _font(font_size)
    image = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    layout = _layout(kind, config)
    x1, y1, x2, y2 = layout.area
    top = max(float(v) for v in config.values)
    boxes = []
    if kind == "chart_v":
        if config.gridlines:
            for value in config.values:
                y = y2 - (y2 - y1) * float(value) / top
                draw.line([(x1, y), (x2, y)], fill=GRID_COLOUR, width=1)
                draw.text((x1 - 4, y), value, font=font, fill=INK, anchor="rm")
        for index, (label, value) in enumerate(bars):
            left, centre = x1 + layout.pitch * index, x1 + layout.pitch * (index + 0.5)
            height = (y2 - y1) * float(value) / top
            half = layout.pitch * 0.3
            draw.rectangle([centre - half, y2 - height, centre + half, y2], fill=BAR_COLOUR)
            if config.value_labels:
                draw.text((centre, y2 - height - 3), value, font=font, fill=INK, anchor="ms")
            draw.text((centre, y2 + 4), label, font=font, fill=INK, anchor="mt")
            boxes.append([label, _box(left, 1, left + layout.pitch, min(size - 1, y2 + font_size + 8))])
        draw.line([(x1, y2), (x2, y2)], fill=INK, width=1)
    else:
        if config.gridlines:
            for value in config.values:
                x = x1 + (x2 - x1) * float(value) / top
                draw.line([(x, y1), (x, y2)], fill=GRID_COLOUR, width=1)
                draw.text((x, y2 + 4), value, font=font, fill=INK, anchor="mt")
        for index, (label, value) in enumerate(bars):
            band, centre = y1 + layout.pitch * index, y1 + layout.pitch * (index + 0.5)
            length = (x2 - x1) * float(value) / top
            half = layout.pitch * 0.3
            draw.rectangle([x1, centre - half, x1 + length, centre + half], fill=BAR_COLOUR)
            if config.value_labels:
                draw.text((x1 + length + 4, centre), value, font=font, fill=INK, anchor="lm")
            draw.text((x1 - 6, centre), label, font=font, fill=INK, anchor="rm")
            boxes.append([label, _box(2, band, size - 2, band + layout.pitch)])
        draw.line([(x1, y1), (x1, y2)], fill=INK, width=1)
    return image, boxes


def draw_table(
    header: list[str], rows: list[list[str]], config: SyntheticChartsConfig
) -> tuple[Image.Image, list, list]:
    """A grid of text cells (the header row first); returns the image, the column boxes and the row boxes.

    Boxes follow ReFocus's tables: a column box spans the table's height inside the column's vertical lines, a row
    box the table's width inside the row's horizontal lines; rows are labelled by their first cell, header first.
    """
    size = config.image_size
    font = _font(config.font_size)
    image = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    layout = _layout("table", config)
    x1, y1, x2, y2 = layout.area
    for row_index, cells in enumerate([header, *rows]):
        centre_y = y1 + layout.pitch * (row_index + 0.5)
        for column_index, text in enumerate(cells):
            centre_x = x1 + layout.column_width * (column_index + 0.5)
            draw.text((centre_x, centre_y), text, font=font, fill=INK, anchor="mm")
    for row_index in range(len(rows) + 2):
        y = y1 + layout.pitch * row_index
        draw.line([(x1, y), (x2, y)], fill=INK, width=1)
    for column_index in range(len(header) + 1):
        x = x1 + layout.column_width * column_index
        draw.line([(x, y1), (x, y2)], fill=INK, width=1)
    columns = [
        [name, _box(x1 + layout.column_width * i + 1, y1, x1 + layout.column_width * (i + 1) - 1, y2)]
        for i, name in enumerate(header)
    ]
    row_boxes = [
        [cells[0], _box(x1, y1 + layout.pitch * i + 1, x2, y1 + layout.pitch * (i + 1) - 1)]
        for i, cells in enumerate([header, *rows])
    ]
    return image, columns, row_boxes


# --- samples ---------------------------------------------------------------------------------------------------


def make_sample(split: str, index: int, config: SyntheticChartsConfig | None = None, seed: int = 0) -> VQASample:
    """Sample `index` of a split: a pure function of (split, index, config, seed).

    `meta`: ``refocus`` (the label boxes), ``kind``, ``target`` (the asked label), ``column`` (tables: the asked
    column), ``focus`` (what an expert edit focuses on, keyed as in ``refocus``), and the drawn data: ``bars``
    ([label, value] pairs) or ``table`` (the header row, then the data rows).
    """
    config = config or SyntheticChartsConfig()
    rng = np.random.default_rng([seed, zlib.crc32(split.encode()), index])
    kind = str(rng.choice(config.kinds))
    count = config.n_rows if kind == "table" else config.n_bars
    labels = [str(label) for label in rng.choice(config.labels, size=count, replace=False)]
    asked = int(rng.integers(count))
    target = labels[asked]
    named = f'"{target}"' if config.quote_labels else target
    if kind == "table":
        names = ["Value"] if config.n_columns == 1 else list(COLUMN_NAMES[: config.n_columns])
        if config.distinct_values:  # each column's values distinct down the rows
            columns = [rng.choice(config.values, size=count, replace=False) for _ in names]
            cells = [[label, *(str(column[i]) for column in columns)] for i, label in enumerate(labels)]
        else:
            cells = [[label, *(str(v) for v in rng.choice(config.values, size=len(names)))] for label in labels]
        column_index = int(rng.integers(len(names)))
        column = names[column_index]
        image, column_boxes, row_boxes = draw_table([NAME_HEADER, *names], cells, config)
        refocus = {"kind": "table", "columns": column_boxes, "rows": row_boxes}
        focus = {"rows": [target]} if len(names) == 1 else {"rows": [target], "columns": [column]}
        answer = cells[asked][1 + column_index]
        question = f"What is the value of {named}?" if len(names) == 1 else f"What is the {column} of {named}?"
        data = {"table": [[NAME_HEADER, *names], *cells], "column": column}
    else:
        drawn = rng.choice(config.values, size=count, replace=False) if config.distinct_values else None
        bars = [
            (label, str(drawn[i] if drawn is not None else rng.choice(config.values))) for i, label in enumerate(labels)
        ]
        image, boxes = draw_chart(kind, bars, config)
        key = "x_values" if kind == "chart_v" else "y_values"
        refocus = {
            "kind": kind,
            "x_values": boxes if kind == "chart_v" else [],
            "y_values": [] if kind == "chart_v" else boxes,
        }
        focus = {key: [target]}
        answer = bars[asked][1]
        question = f"What is the value of {named}?"
        data = {"bars": [list(bar) for bar in bars]}
    return VQASample(
        uid=f"{SOURCE}-{split}-{index:06d}",
        source=SOURCE,
        image=image,
        question=question,
        answer=answer,
        answer_type="wtq" if kind == "table" else "relaxed",
        category=kind,
        meta={"refocus": refocus, "kind": kind, "target": target, "focus": focus, **data},
    )


def iter_split(split: str, n: int, config: SyntheticChartsConfig | None = None, seed: int = 0) -> Iterator[VQASample]:
    """Samples 0..n-1 of a split, one at a time. Splits draw from disjoint seed streams."""
    if not split:
        raise ValueError("split must be a non-empty name such as 'train', 'val' or 'test'")
    for index in range(n):
        yield make_sample(split, index, config, seed)


def build_split(split: str, n: int, config: SyntheticChartsConfig | None = None, seed: int = 0) -> list[VQASample]:
    """The first `n` samples of `split` ("train", "val", "test", ...) with in-memory PIL images."""
    return list(iter_split(split, n, config, seed))


def write_split(
    out_dir: str | Path,
    split: str,
    n: int,
    config: SyntheticChartsConfig | None = None,
    seed: int = 0,
    progress: bool = False,
) -> Path:
    """Write a split as ``<out_dir>/<split>/<uid>.png`` plus ``<out_dir>/<split>.jsonl``; return the JSONL path.

    Rows follow the generic format read by `iapo.data.jsonl.read_jsonl` (image paths relative to `out_dir`, the
    label boxes in ``meta``); read them back with ``read_jsonl(path, source="synthetic_charts")``.
    """
    return write_samples(out_dir, split, iter_split(split, n, config, seed), n, progress)


def main(argv: list[str] | None = None) -> None:
    generator_main(
        argv,
        SyntheticChartsConfig,
        write_split,
        "Write the synthetic chart / table splits (PNGs + JSONL).",
        "data/synthetic_charts",
    )


if __name__ == "__main__":
    main()
