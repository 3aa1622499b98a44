"""Tests for iapo.data.synthetic: determinism, answers and boxes, the need to zoom, knobs, and writing to disk."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from itertools import combinations

import numpy as np
import pytest
from PIL import Image

from iapo.data.jsonl import read_jsonl
from iapo.data.sample import SkipLog, load_image
from iapo.data.synthetic import (
    BACKGROUND,
    CELL_TINTS,
    SceneObject,
    SyntheticConfig,
    build_split,
    main,
    render_scene,
    sample_scene,
    write_split,
)
from iapo.experiments.demo.settings import synthetic_task

INPUT_SIDE = 224  # the tiny model's input: 8x8 visual tokens of 28 px

TILES = {  # what each pattern name means: its darkest pixels in one 3x3 period, up to a cyclic shift
    "horizontal lines": ["...", "###", "..."],
    "vertical lines": [".#.", ".#.", ".#."],
    "dots": ["##.", "##.", "..."],
    "checkerboard": [".#.", "#.#", ".#."],
    "holes": ["###", "##.", "###"],
}


@pytest.fixture(scope="module")
def train() -> list:
    return build_split("train", 200)


@pytest.fixture(scope="module")
def test_set() -> list:
    return build_split("test", 200)


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def _period_profile(image: Image.Image, bbox: list[int]) -> np.ndarray:
    """Mean grey of the bbox at each (y mod 3, x mod 3) of the canvas, minus its mean: the texture's signature."""
    x1, y1, x2, y2 = bbox
    grey = np.asarray(image.convert("L"), dtype=np.float64)[y1:y2, x1:x2]
    grey = np.roll(grey, (y1 % 3, x1 % 3), axis=(0, 1))  # row/column index now equals the canvas coordinate mod 3
    h, w = (y2 - y1) // 3 * 3, (x2 - x1) // 3 * 3
    profile = grey[:h, :w].reshape(h // 3, 3, w // 3, 3).mean(axis=(0, 2))
    return (profile - profile.mean()).ravel()


def _downsampled_view(image: Image.Image, bbox: list[int], resample: Image.Resampling) -> Image.Image:
    """What the model sees of the bbox without zooming: the canvas at input size, scaled back to canvas pixels."""
    scale = image.width / INPUT_SIDE
    small = image.resize((INPUT_SIDE, INPUT_SIDE), resample)
    region = small.crop(tuple(round(v / scale) for v in bbox))
    view = Image.new("RGB", image.size)
    view.paste(region.resize((bbox[2] - bbox[0], bbox[3] - bbox[1]), Image.Resampling.BICUBIC), tuple(bbox[:2]))
    return view


def _named_pattern(profile: np.ndarray, names: tuple[str, ...]) -> str:
    """The name among `names` whose tile best matches the profile's dark pixels, over all cyclic shifts."""

    def score(name: str) -> float:
        tile = np.array([[c == "#" for c in row] for row in TILES[name]], dtype=np.float64)
        tile = (tile - tile.mean()) / np.linalg.norm(tile - tile.mean())
        darkness = -profile.reshape(3, 3)
        return max(float((np.roll(tile, shift, axis=(0, 1)) * darkness).sum()) for shift in np.ndindex(3, 3))

    return max(names, key=score)


# --- records ---------------------------------------------------------------------------------------------------


def test_samples_are_mcq_records_with_a_box(train):
    config = SyntheticConfig()
    for sample in train[:50]:
        assert sample.source == "synthetic" and sample.answer_type == "mcq"
        assert len(sample.options) == config.n_options == len(set(sample.options))
        assert set(sample.options) <= set(TILES)
        assert sample.answer in sample.letters
        assert sample.category == sample.options[sample.letters.index(sample.answer)] == sample.meta["pattern"]
        assert sample.question == f"What pattern is inside the {sample.meta['colour']} {sample.meta['shape']}?"
        assert sample.image.size == (config.canvas_size, config.canvas_size) and sample.image.mode == "RGB"
        json.dumps(sample.meta)  # JSON-serialisable, so it survives write_split
    assert len({s.uid for s in train}) == len(train)
    letters = [s.answer for s in train]
    assert min(letters.count(letter) for letter in "ABCD") > 25  # the correct letter is spread over A-D


def test_same_seed_gives_identical_samples_and_prefixes_agree():
    first, again, prefix = build_split("val", 8, seed=3), build_split("val", 8, seed=3), build_split("val", 4, seed=3)
    for a, b in zip(first, again, strict=True):
        assert dataclasses.replace(a, image=None) == dataclasses.replace(b, image=None)
        assert np.array_equal(_pixels(a.image), _pixels(b.image))
    assert [s.uid for s in prefix] == [s.uid for s in first[:4]]
    assert all(np.array_equal(_pixels(a.image), _pixels(b.image)) for a, b in zip(prefix, first, strict=False))


def test_splits_and_seeds_give_different_samples():
    def digests(samples):
        return {hashlib.sha1(s.image.tobytes()).hexdigest() for s in samples}

    train, val, test = (digests(build_split(split, 32)) for split in ("train", "val", "test"))
    other_seed = digests(build_split("train", 32, seed=1))
    assert len(train) == 32
    assert not (train & val) and not (train & test) and not (val & test) and not (train & other_seed)


def test_box_is_inside_the_canvas_and_is_exactly_the_target(train):
    config = SyntheticConfig()
    for sample in train[:40]:
        x1, y1, x2, y2 = sample.meta["bbox"]
        assert 0 <= x1 < x2 <= config.canvas_size and 0 <= y1 < y2 <= config.canvas_size
        objects = tuple(
            SceneObject(o["colour"], o["shape"], o["pattern"], tuple(o["bbox"])) for o in sample.meta["objects"]
        )
        assert list(objects[0].box) == sample.meta["bbox"] and objects[0].pattern == sample.meta["pattern"]
        assert np.array_equal(_pixels(render_scene(objects, config)), _pixels(sample.image))
        changed = np.any(_pixels(render_scene(objects[1:], config)) != _pixels(sample.image), axis=-1)
        ys, xs = np.nonzero(changed)  # the pixels drawn for the target alone
        assert [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] == [x1, y1, x2, y2]


def test_answer_letter_names_the_pattern_drawn_in_the_box(train):
    for sample in train:
        drawn = _named_pattern(_period_profile(sample.image, sample.meta["bbox"]), tuple(TILES))
        assert sample.options[sample.letters.index(sample.answer)] == drawn, sample.uid


# --- the task needs the zoom ------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", [SyntheticConfig(), synthetic_task()], ids=["default", "demo"])
def test_patterns_vanish_at_input_resolution_but_differ_in_the_zoom_crop(config):
    rng = np.random.default_rng(0)
    for _ in range(4):
        objects = sample_scene(rng, config)
        x1, y1, x2, y2 = objects[0].box
        renders = [
            render_scene((dataclasses.replace(objects[0], pattern=p), *objects[1:]), config) for p in config.patterns
        ]
        for resample, tolerance in ((Image.Resampling.BOX, 0), (Image.Resampling.BICUBIC, 2)):
            small = np.stack([_pixels(r.resize((INPUT_SIDE, INPUT_SIDE), resample)) for r in renders])
            assert np.abs(small - small[0]).max() <= tolerance  # grey levels, the whole 224-px input
        crops = [_pixels(r.crop((x1, y1, x2, y2))) for r in renders]
        for a, b in combinations(crops, 2):  # the texture shows plainly in the full-resolution crop
            assert np.abs(a - b).mean() > 10  # grey levels over the whole crop, background included


def test_nearest_template_reads_the_zoom_crop_but_not_the_input_view(train, test_set):
    def accuracy(view) -> float:
        grouped: dict[str, list[np.ndarray]] = {}
        for sample in train:
            grouped.setdefault(sample.meta["pattern"], []).append(_period_profile(view(sample), sample.meta["bbox"]))
        templates = {name: np.mean(profiles, axis=0) for name, profiles in grouped.items()}
        hits = 0
        for sample in test_set:
            profile = _period_profile(view(sample), sample.meta["bbox"])
            guess = min(sample.options, key=lambda name: np.sum((profile - templates[name]) ** 2))
            hits += sample.options.index(guess) == sample.letters.index(sample.answer)
        return hits / len(test_set)

    assert accuracy(lambda s: s.image) >= 0.95
    for resample in (Image.Resampling.BICUBIC, Image.Resampling.BOX):
        assert accuracy(lambda s, r=resample: _downsampled_view(s.image, s.meta["bbox"], r)) <= 0.4  # chance: 0.25


def test_coarse_pattern_scale_is_visible_without_zooming():
    config = SyntheticConfig(pattern_scale=3, object_size=120)
    objects = sample_scene(np.random.default_rng(0), config)
    renders = [
        render_scene((dataclasses.replace(objects[0], pattern=p), *objects[1:]), config) for p in config.patterns
    ]
    small = np.stack([_pixels(r.resize((INPUT_SIDE, INPUT_SIDE), Image.Resampling.BICUBIC)) for r in renders])
    assert np.abs(small - small[0]).max() > 50


# --- knobs ------------------------------------------------------------------------------------------------------


def test_knobs_shape_the_scene():
    config = SyntheticConfig(grid=3, n_distractors=5, n_same_colour=2, n_options=3, jitter=12, canvas_size=504)
    for sample in build_split("train", 30, config):
        objects = sample.meta["objects"]
        target = objects[0]
        assert len(objects) == 6 and len(sample.options) == 3 and sample.image.size == (504, 504)
        same_colour = [o for o in objects[1:] if o["colour"] == target["colour"]]
        assert len(same_colour) == 2 and all(o["shape"] != target["shape"] for o in same_colour)
        boxes = [o["bbox"] for o in objects]
        cells = {(b[1] // (504 // 3), b[0] // (504 // 3)) for b in boxes}
        assert len(cells) == 6  # one object per grid cell, so none overlap
        assert all(b[0] % 3 == 0 and b[1] % 3 == 0 and b[2] - b[0] == config.object_size for b in boxes)


def test_cell_hint_shades_the_target_cell_in_the_tint_that_names_it():
    config = SyntheticConfig(grid=2, n_distractors=0, cell_hint=True)
    pitch = config.canvas_size // 2
    seen = set()
    for sample in build_split("train", 16, config):
        x1, y1, x2, y2 = sample.meta["bbox"]
        cell = (y1 // pitch, x1 // pitch)
        seen.add(cell)
        pixels = _pixels(sample.image)
        for row in range(2):
            for col in range(2):
                corner = pixels[row * pitch + 1, col * pitch + 1]  # a background pixel of each cell
                wanted = CELL_TINTS[row * 2 + col] if (row, col) == cell else BACKGROUND
                assert tuple(corner) == wanted
    assert len(seen) == 4


def test_unshuffled_options_give_each_texture_a_fixed_letter():
    config = SyntheticConfig(
        shuffle_options=False, n_options=4, patterns=("dots", "holes", "checkerboard", "vertical lines")
    )
    for sample in build_split("train", 20, config):
        assert sample.options == config.patterns
        assert sample.answer == "ABCD"[config.patterns.index(sample.meta["pattern"])]
    assert len({sample.options for sample in build_split("train", 20, SyntheticConfig())}) > 1  # the default


@pytest.mark.parametrize(
    "knobs",
    [
        {"object_size": 200},
        {"n_distractors": 16},
        {"n_options": 6},
        {"n_same_colour": 4},
        {"colours": ("red", "teal")},
        {"patterns": ("grid", "grid", "dots")},
        {"panel_fraction": 0.1},
    ],
)
def test_bad_knobs_are_rejected(knobs):
    with pytest.raises(ValueError):
        SyntheticConfig(**knobs)


# --- on disk ----------------------------------------------------------------------------------------------------


def test_write_split_round_trips_through_read_jsonl(tmp_path):
    config = SyntheticConfig(n_distractors=2)
    path = write_split(tmp_path / "synthetic", "val", 5, config, seed=7)
    assert path == tmp_path / "synthetic" / "val.jsonl"
    read = read_jsonl(path, source="synthetic", skips=SkipLog(strict=True))
    built = build_split("val", 5, config, seed=7)
    assert len(read) == len(built) == 5
    for loaded, original in zip(read, built, strict=True):
        assert isinstance(loaded.image, str)
        assert dataclasses.replace(loaded, image=None) == dataclasses.replace(original, image=None)
        assert np.array_equal(_pixels(load_image(loaded.image)), _pixels(original.image))


def test_command_line_writes_the_requested_splits(tmp_path, capsys):
    main(["--out", str(tmp_path), "--train", "3", "--val", "2", "--test", "0", "--n_distractors", "1", "--cell_hint"])
    assert len((tmp_path / "train.jsonl").read_text().splitlines()) == 3
    assert len(list((tmp_path / "val").glob("*.png"))) == 2
    assert not (tmp_path / "test.jsonl").exists()
    assert len(json.loads((tmp_path / "train.jsonl").read_text().splitlines()[0])["meta"]["objects"]) == 2
    assert "wrote 3 samples" in capsys.readouterr().out
    first = json.loads((tmp_path / "train.jsonl").read_text().splitlines()[0])
    pixels = _pixels(load_image(str(tmp_path / first["image"]))).reshape(-1, 3)
    assert any((pixels == tint).all(axis=1).any() for tint in CELL_TINTS)  # --cell_hint reached the config
