"""Tests for iapo.data.synthetic_charts: records in ReFocus's box layout, exact boxes, determinism, knobs, writing to
disk, and the measurement that the edit helps: at the tiny model's 224-px input a template reader recovers the asked
value from the image with every other bar / row masked white, and not from the original."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from iapo.agent.tools.refocus import LABEL_KINDS, apply_edit, label_boxes
from iapo.data.jsonl import read_jsonl
from iapo.data.sample import REFOCUS_META, SkipLog, load_image
from iapo.data.synthetic_charts import (
    BAR_COLOUR,
    GRID_COLOUR,
    KINDS,
    SyntheticChartsConfig,
    build_split,
    draw_chart,
    draw_table,
    main,
    make_sample,
    write_split,
)

INPUT_SIDE = 224  # the tiny student's input
FOCUS_KEY = {"chart_v": "x_values", "chart_h": "y_values", "table": "rows"}


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def masked(sample) -> Image.Image:
    """The expert edit, done here from the meta boxes: every label box but the asked one painted white (a table's
    header row is kept, as ReFocus's row mask keeps it)."""
    image = sample.image.copy()
    draw = ImageDraw.Draw(image)
    key = FOCUS_KEY[sample.meta["kind"]]
    for index, (label, box) in enumerate(sample.meta["refocus"][key]):
        if label not in sample.meta["focus"][key] and not (key == "rows" and index == 0):
            draw.rectangle(box, fill="white")
    return image


def masked_by_tool(sample) -> Image.Image:
    """The same edit by the real tool (`focus_on_..._with_mask`: boxes inset by 2 px, as ReFocus's)."""
    key = FOCUS_KEY[sample.meta["kind"]]
    pairs = label_boxes(sample.meta, key)
    chosen = [label in sample.meta["focus"][key] for label, _ in pairs]
    return apply_edit(sample.image, pairs, chosen, "mask", LABEL_KINDS[key])


def original(sample) -> Image.Image:
    return sample.image


def reader_features(sample, view) -> np.ndarray:
    """What the template reader sees of `view(sample)` at the model's resolution.

    Charts: the profile of bar-coloured pixels along the value axis (how many pixels of each row / column are bar).
    Tables: the ink in the value column below the header, cropped to its extent (rules removed) and scaled to 16x8.
    """
    image = view(sample).resize((INPUT_SIDE, INPUT_SIDE), Image.Resampling.BICUBIC)
    pixels = np.asarray(image, dtype=np.float64)
    kind, scale = sample.meta["kind"], INPUT_SIDE / sample.image.width
    if kind != "table":
        bar = np.linalg.norm(pixels - np.array(BAR_COLOUR), axis=-1) < 60
        profile = bar.sum(axis=1) if kind == "chart_v" else bar.sum(axis=0)
        return profile / max(1, profile.max())
    _, (x1, _, x2, _) = sample.meta["refocus"]["columns"][-1]
    header_bottom, table_bottom = sample.meta["refocus"]["rows"][0][1][3], sample.meta["refocus"]["rows"][-1][1][3]
    region = (
        255
        - pixels.mean(axis=-1)[
            int(header_bottom * scale) + 2 : int(table_bottom * scale) - 1, int(x1 * scale) + 2 : int(x2 * scale) - 1
        ]
    )
    ink = region > 60
    ink[ink.mean(axis=1) > 0.5, :] = False  # the horizontal rules the row mask leaves
    ink[:, ink.mean(axis=0) > 0.5] = False
    ys, xs = np.nonzero(ink)
    if not len(ys):
        return np.zeros(16 * 8)
    crop = region[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].astype(np.uint8)
    return np.asarray(Image.fromarray(crop).resize((16, 8), Image.Resampling.BILINEAR), dtype=np.float64).ravel() / 255


def template_accuracy(train: list, test: list, view, test_view=None) -> float:
    """Nearest-centroid reading of the answer: one template per value, the mean feature of its training samples
    seen through `view`; the test samples are seen through `test_view` (default: the same)."""
    grouped: dict[str, list[np.ndarray]] = {}
    for sample in train:
        grouped.setdefault(sample.answer, []).append(reader_features(sample, view))
    templates = {value: np.mean(features, axis=0) for value, features in grouped.items()}
    hits = 0
    for sample in test:
        feature = reader_features(sample, test_view or view)
        hits += min(templates, key=lambda value: np.sum((feature - templates[value]) ** 2)) == sample.answer
    return hits / len(test)


@pytest.fixture(scope="module")
def samples() -> list:
    return build_split("train", 60)


# --- records ----------------------------------------------------------------------------------------------------


def test_records_carry_refocus_boxes_and_the_expert_focus(samples):
    config = SyntheticChartsConfig()
    assert {s.meta["kind"] for s in samples} == set(KINDS)
    for sample in samples:
        kind, refocus = sample.meta["kind"], sample.meta["refocus"]
        assert refocus["kind"] == kind and set(refocus) - {"kind"} <= set(REFOCUS_META) - {"kind"}
        assert sample.source == "synthetic_charts" and sample.category == kind
        assert sample.answer_type == ("wtq" if kind == "table" else "relaxed") and sample.answer in config.values
        assert sample.question == f"What is the value of {sample.meta['target']}?"
        assert sample.image.size == (config.image_size, config.image_size) and sample.image.mode == "RGB"
        key = FOCUS_KEY[kind]
        labels = [label for label, _ in refocus[key]]
        assert sample.meta["focus"] == {key: [sample.meta["target"]]} and sample.meta["target"] in labels
        for _, box in refocus[key] + refocus.get("columns", []):
            x1, y1, x2, y2 = box
            assert 0 <= x1 < x2 <= config.image_size and 0 <= y1 < y2 <= config.image_size
        if kind == "table":
            assert labels[0] == "Name" and len(labels) == 1 + config.n_rows and len(set(labels)) == len(labels)
            assert [name for name, _ in refocus["columns"]] == ["Name", "Value"]
            row = next(r for r in sample.meta["table"][1:] if r[0] == sample.meta["target"])
            assert row[1] == sample.answer
        else:
            assert (
                len(labels) == config.n_bars == len(set(labels))
                and refocus[FOCUS_KEY["chart_h" if kind == "chart_v" else "chart_v"]] == []
            )
            assert dict(sample.meta["bars"])[sample.meta["target"]] == sample.answer
        json.dumps(sample.meta)


def test_the_image_is_the_drawn_data_and_each_box_holds_its_own_bar_or_row(samples):
    config = SyntheticChartsConfig()
    for sample in samples[:24]:
        kind = sample.meta["kind"]
        if kind == "table":
            header, *rows = sample.meta["table"]
            redrawn = draw_table(header, rows, config)[0]
            rows[0] = [rows[0][0], "99" if rows[0][1] != "99" else "11"]  # change one cell
            changed = draw_table(header, rows, config)[0]
            key, index = "rows", 1
        else:
            bars = [tuple(bar) for bar in sample.meta["bars"]]
            redrawn = draw_chart(kind, bars, config)[0]
            bars[0] = (bars[0][0], config.values[0] if bars[0][1] != config.values[0] else config.values[-1])
            changed = draw_chart(kind, bars, config)[0]
            key, index = FOCUS_KEY[kind], 0
        assert np.array_equal(_pixels(redrawn), _pixels(sample.image))
        ys, xs = np.nonzero(np.any(_pixels(changed) != _pixels(redrawn), axis=-1))
        x1, y1, x2, y2 = sample.meta["refocus"][key][index][1]
        assert len(ys) and x1 <= xs.min() and xs.max() <= x2 and y1 <= ys.min() and ys.max() <= y2  # only its box


@pytest.mark.parametrize("kind", ["chart_v", "chart_h"])
def test_bar_lengths_are_proportional_to_the_values(kind):
    for sample in build_split("test", 8, SyntheticChartsConfig(kinds=(kind,))):
        bar = np.all(_pixels(sample.image) == BAR_COLOUR, axis=-1)
        pixels_per_unit = []
        for (_, box), (_, value) in zip(sample.meta["refocus"][FOCUS_KEY[kind]], sample.meta["bars"], strict=True):
            x1, y1, x2, y2 = (int(v) for v in box)
            band = bar[y1:y2, x1:x2]
            length = band.any(axis=1).sum() if kind == "chart_v" else band.any(axis=0).sum()
            pixels_per_unit.append(length / float(value))
        assert min(pixels_per_unit) > 5 and max(pixels_per_unit) - min(pixels_per_unit) <= 0.25  # within a pixel


def test_same_seed_gives_identical_samples_and_splits_differ():
    first, again = build_split("val", 6, seed=3), build_split("val", 6, seed=3)
    for a, b in zip(first, again, strict=True):
        assert dataclasses.replace(a, image=None) == dataclasses.replace(b, image=None)
        assert np.array_equal(_pixels(a.image), _pixels(b.image))
    assert [s.uid for s in build_split("val", 3, seed=3)] == [s.uid for s in first[:3]]

    def digests(split: str, seed: int = 0) -> set[str]:
        return {hashlib.sha1(s.image.tobytes()).hexdigest() for s in build_split(split, 12, seed=seed)}

    assert not digests("train") & digests("test") and not digests("train") & digests("train", seed=1)


# --- the edit helps -----------------------------------------------------------------------------------------------


def test_the_edit_makes_the_asked_value_readable_at_the_model_resolution():
    config = SyntheticChartsConfig()
    train, test = build_split("train", 240, config), build_split("test", 240, config)
    chance = 1 / len(config.values)
    report = {}
    for kind in KINDS:
        train_kind = [s for s in train if s.meta["kind"] == kind]
        test_kind = [s for s in test if s.meta["kind"] == kind]
        report[kind] = (
            template_accuracy(train_kind, test_kind, original),
            template_accuracy(train_kind, test_kind, masked),
            template_accuracy(train_kind, test_kind, masked, masked_by_tool),
        )
    print(
        {
            k: f"original {o:.2f}, edited {e:.2f}, by the tool {t:.2f} (chance {chance:.2f})"
            for k, (o, e, t) in report.items()
        }
    )
    for kind, (before, edited, by_tool) in report.items():
        assert edited >= 0.95 and by_tool >= 0.95, kind  # one bar / row left: read almost always
        assert before <= 0.6, kind  # the asked bar is not singled out: little above chance
        assert edited - before >= 0.4, kind


# --- knobs ------------------------------------------------------------------------------------------------------


def test_knobs_shape_the_samples():
    config = SyntheticChartsConfig(
        kinds=("table",), n_rows=6, n_columns=3, font_size=12, image_size=336, values=("1", "2", "3")
    )
    for sample in build_split("train", 12, config):
        refocus = sample.meta["refocus"]
        column = sample.meta["column"]
        assert sample.image.size == (336, 336) and len(refocus["rows"]) == 7
        assert [name for name, _ in refocus["columns"]] == ["Name", "Q1", "Q2", "Q3"]
        assert sample.question == f"What is the {column} of {sample.meta['target']}?"
        assert sample.meta["focus"] == {"rows": [sample.meta["target"]], "columns": [column]}
        header, *rows = sample.meta["table"]
        row = next(r for r in rows if r[0] == sample.meta["target"])
        assert row[header.index(column)] == sample.answer and sample.answer in ("1", "2", "3")
    bars = build_split("train", 4, SyntheticChartsConfig(kinds=("chart_h",), n_bars=7))
    assert all(len(s.meta["refocus"]["y_values"]) == 7 for s in bars)
    plain = build_split("train", 1, SyntheticChartsConfig(kinds=("chart_v",), value_labels=False, gridlines=False))[0]
    labelled = build_split("train", 1, SyntheticChartsConfig(kinds=("chart_v",)))[0]

    def ink(sample) -> int:  # black text and axis pixels (bars and grid lines are not this dark in every channel)
        return int(np.all(_pixels(sample.image) < 80, axis=-1).sum())

    def grid(sample) -> int:  # rows that are largely grid line
        return int((np.all(_pixels(sample.image) == GRID_COLOUR, axis=-1).sum(axis=1) > 100).sum())

    assert ink(plain) < ink(labelled) and grid(plain) == 0 < grid(labelled)


@pytest.mark.parametrize(
    "knobs",
    [
        {"kinds": ("pie",)},
        {"values": ("10", "ten")},
        {"values": ("5",)},
        {"n_bars": 1},
        {"n_bars": 30},
        {"n_columns": 9},
        {"font_size": 200},
        {"n_bars": 14, "font_size": 40},
        {"labels": ("Name", "b", "c")},
    ],
)
def test_bad_knobs_are_rejected(knobs):
    with pytest.raises(ValueError):
        SyntheticChartsConfig(**knobs)


# --- on disk ----------------------------------------------------------------------------------------------------


def test_write_split_round_trips_through_read_jsonl(tmp_path):
    path = write_split(tmp_path / "charts", "val", 4, seed=7)
    read = read_jsonl(path, source="synthetic_charts", skips=SkipLog(strict=True))
    built = build_split("val", 4, seed=7)
    for loaded, original in zip(read, built, strict=True):
        assert dataclasses.replace(loaded, image=None) == dataclasses.replace(original, image=None)
        assert np.array_equal(_pixels(load_image(loaded.image)), _pixels(original.image))


def test_command_line_writes_the_requested_splits(tmp_path, capsys):
    main(["--out", str(tmp_path), "--train", "3", "--val", "0", "--test", "1", "--kinds", "table", "--n_rows", "3"])
    rows = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(len(r["meta"]["refocus"]["rows"]) == 4 for r in rows)
    assert not (tmp_path / "val.jsonl").exists() and "wrote 3 samples" in capsys.readouterr().out


def test_quoted_labels_and_distinct_values():
    config = SyntheticChartsConfig(
        kinds=("chart_v", "table"), quote_labels=True, distinct_values=True, n_bars=5, n_rows=5
    )
    for index in range(40):
        sample = make_sample("train", index, config)
        assert sample.question == f'What is the value of "{sample.meta["target"]}"?'
        values = (
            [v for _, v in sample.meta["bars"]] if "bars" in sample.meta else [r[1] for r in sample.meta["table"][1:]]
        )
        assert len(set(values)) == len(values) == 5
    plain = make_sample("train", 0, SyntheticChartsConfig(kinds=("chart_v",)))
    assert plain.question == f"What is the value of {plain.meta['target']}?"  # unquoted by default
    with pytest.raises(ValueError, match="distinct_values"):
        SyntheticChartsConfig(distinct_values=True, n_bars=6)  # five values for six bars
